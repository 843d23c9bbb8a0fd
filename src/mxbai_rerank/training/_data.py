"""Training and evaluation data: JSON lines or BEIR folders in, query groups out; hard-negative mining.

Accepted training inputs (see :func:`load_training_data`):

* JSON lines, one object per line, either
  ``{"query", "positive" | "positives", "negative" | "negatives", "instruction"?}`` (a document or
  a list of documents each) or ``{"query", "document", "label", "instruction"?}`` (``label``: 0/1
  or a graded relevance >= 0). Lines with the same query (and instruction) form one group.
* A BEIR-format folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``), read by
  :func:`mxbai_rerank.evaluation.load_beir`: relevance > 0 is a positive with that grade, an
  explicit 0 a negative.
* Records already in memory (a list of such dicts).

Documents are strings or JSON objects turned into text exactly as ``rank`` does
(:mod:`mxbai_rerank._documents`, with ``rank_fields``).

Hard negatives (:func:`mine_hard_negatives`): for every query with fewer than ``num_negatives``
negatives, BM25 (``bm25s``, the evaluation code's :func:`~mxbai_rerank.evaluation.bm25_search`)
ranks the corpus (a BEIR corpus, or every document of the training file). Candidates are
taken best first, skipping the query's own documents. With a model to re-score them, a
candidate is a likely false negative and skipped when it scores at least
``lowest positive score - margin``; the rest are taken by model score, highest first. When BM25
finds too few, random corpus documents fill up the remainder.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._documents import document_text
from ..evaluation._beir import BeirDataset, DatasetError, _jsonl_objects, load_beir

if TYPE_CHECKING:
    from .._model import TransformerReranker
    from ..evaluation import Ranking

__all__ = [
    "DatasetError",
    "EvalSet",
    "QueryGroup",
    "TrainingData",
    "eval_set_from_data",
    "load_eval_set",
    "load_training_data",
    "mine_hard_negatives",
]

logger = logging.getLogger(__name__)

Record = Mapping[str, Any]


@dataclass
class QueryGroup:
    """One query (with its instruction) and its judged documents.

    ``labels[i]`` is the graded relevance of ``documents[i]``: > 0 relevant, 0 not relevant.
    The last ``mined`` documents are mined hard negatives.
    """

    query: str
    documents: list[str]
    labels: list[float]
    instruction: str | None = None
    mined: int = 0

    @property
    def positives(self) -> list[int]:
        return [i for i, label in enumerate(self.labels) if label > 0]

    @property
    def negatives(self) -> list[int]:
        return [i for i, label in enumerate(self.labels) if label <= 0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "instruction": self.instruction,
            "documents": self.documents,
            "labels": self.labels,
            "mined": self.mined,
        }

    @staticmethod
    def from_dict(obj: Mapping[str, Any]) -> QueryGroup:
        return QueryGroup(
            obj["query"], list(obj["documents"]), [float(x) for x in obj["labels"]], obj.get("instruction"),
            int(obj.get("mined", 0)),
        )  # fmt: skip


@dataclass
class TrainingData:
    """Query groups ready for training, and the corpus hard negatives are mined from."""

    groups: list[QueryGroup]
    corpus: list[str] = field(default_factory=list)
    source: str = "<records>"
    skipped: int = 0  # queries dropped for having no positive

    @property
    def num_pairs(self) -> int:
        return sum(len(g.documents) for g in self.groups)

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "queries": len(self.groups),
            "pairs": self.num_pairs,
            "positives": sum(len(g.positives) for g in self.groups),
            "negatives": sum(len(g.negatives) for g in self.groups),
            "mined_negatives": sum(g.mined for g in self.groups),
            "skipped_queries_without_positive": self.skipped,
        }

    def save(self, path: Path) -> None:
        payload = {"source": self.source, "skipped": self.skipped, "groups": [g.to_dict() for g in self.groups]}
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)

    @staticmethod
    def load(path: Path) -> TrainingData:
        payload = json.loads(path.read_text(encoding="utf-8"))
        groups = [QueryGroup.from_dict(g) for g in payload["groups"]]
        return TrainingData(groups, [], payload.get("source", str(path)), int(payload.get("skipped", 0)))


# -- parsing ---------------------------------------------------------------------------------
def _text(value: Any, where: str, key: str, rank_fields: list[str] | None) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        try:
            return document_text(value, rank_fields)
        except ValueError as exc:
            raise DatasetError(f"{where}: {key}: {exc}") from None
    raise DatasetError(f"{where}: {key} must be a string or a JSON object, got {type(value).__name__}")


def _texts(value: Any, where: str, key: str, rank_fields: list[str] | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [_text(v, where, f"{key}[{i}]", rank_fields) for i, v in enumerate(value)]
    return [_text(value, where, key, rank_fields)]


def _label(value: Any, where: str) -> float:
    if isinstance(value, bool):
        return float(value)
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise DatasetError(f"{where}: 'label' must be a number >= 0 (0/1 or a graded relevance), got {value!r}")
    return float(value)


def _parse_record(
    obj: Record, where: str, rank_fields: list[str] | None
) -> tuple[str, str | None, list[tuple[str, float]]]:
    """``(query, instruction, [(document text, label), ...])`` of one record."""
    query = obj.get("query")
    if not isinstance(query, str) or not query.strip():
        raise DatasetError(f"{where}: missing 'query' (a non-empty string)")
    instruction = obj.get("instruction")
    if instruction is not None and not isinstance(instruction, str):
        raise DatasetError(f"{where}: 'instruction' must be a string")
    if "document" in obj or "label" in obj:
        if "document" not in obj or "label" not in obj:
            raise DatasetError(f"{where}: a pointwise line needs both 'document' and 'label'")
        return (
            query,
            instruction or None,
            [(_text(obj["document"], where, "document", rank_fields), _label(obj["label"], where))],
        )
    for single, plural in (("positive", "positives"), ("negative", "negatives")):
        if single in obj and plural in obj:
            raise DatasetError(f"{where}: give {single!r} or {plural!r}, not both")
    positives = _texts(obj.get("positives", obj.get("positive")), where, "positives", rank_fields)
    negatives = _texts(obj.get("negatives", obj.get("negative")), where, "negatives", rank_fields)
    if not any(k in obj for k in ("positive", "positives", "negative", "negatives")):
        raise DatasetError(
            f"{where}: expected 'positive'/'positives' and 'negative'/'negatives', or 'document' and 'label' "
            f"(keys: {', '.join(sorted(obj)) or 'none'})"
        )
    return query, instruction or None, [(d, 1.0) for d in positives] + [(d, 0.0) for d in negatives]


def _groups_from_rows(rows: Sequence[tuple[str, str | None, list[tuple[str, float]]]]) -> list[QueryGroup]:
    """Rows merged per (query, instruction), in first-seen order; a document judged twice keeps its highest label."""
    merged: dict[tuple[str, str | None], dict[str, float]] = {}
    for query, instruction, docs in rows:
        judged = merged.setdefault((query, instruction), {})
        for text, label in docs:
            judged[text] = max(label, judged.get(text, label))
    return [
        QueryGroup(query, list(judged), list(judged.values()), instruction)
        for (query, instruction), judged in merged.items()
    ]


def _keep_judged(groups: list[QueryGroup], source: str) -> tuple[list[QueryGroup], int]:
    kept = [g for g in groups if g.positives]
    skipped = len(groups) - len(kept)
    if skipped:
        logger.warning("%s: skipped %d quer%s without any positive", source, skipped, "y" if skipped == 1 else "ies")
    if not kept:
        raise DatasetError(
            f"{source}: no training examples (an empty dataset"
            + (f", or {skipped} queries without any positive" if skipped else "")
            + ")"
        )
    return kept, skipped


def _records_rows(
    records: Sequence[Record], rank_fields: list[str] | None
) -> list[tuple[str, str | None, list[tuple[str, float]]]]:
    rows = []
    for i, obj in enumerate(records):
        if not isinstance(obj, Mapping):
            raise DatasetError(f"records[{i}]: expected a JSON object, got {type(obj).__name__}")
        rows.append(_parse_record(obj, f"records[{i}]", rank_fields))
    return rows


def _file_rows(path: Path, rank_fields: list[str] | None) -> list[tuple[str, str | None, list[tuple[str, float]]]]:
    if not path.is_file():
        raise DatasetError(
            f"training data {str(path)!r} does not exist" if not path.exists() else f"{path}: not a file"
        )
    return [_parse_record(obj, f"{path}:{lineno}", rank_fields) for lineno, obj in _jsonl_objects(path)]


def _beir_groups(dataset: BeirDataset) -> tuple[list[QueryGroup], int]:
    groups, missing = [], 0
    for qid, judged in dataset.qrels.items():
        docs, labels = [], []
        for doc_id, relevance in judged.items():
            if doc_id not in dataset.corpus:
                missing += 1
                continue
            docs.append(dataset.document_text(doc_id))
            labels.append(float(max(relevance, 0)))
        groups.append(QueryGroup(dataset.queries[qid], docs, labels))
    if missing:
        logger.warning("%s: %d judged document id(s) are not in the corpus; they are skipped", dataset.path, missing)
    return groups, missing


def load_training_data(
    source: str | os.PathLike[str] | Sequence[Record] | TrainingData,
    *,
    split: str = "train",
    rank_fields: Sequence[str] | None = None,
) -> TrainingData:
    """Training data from a JSON-lines file, a BEIR-format folder (its ``split`` qrels) or records.

    Raises :class:`~mxbai_rerank.evaluation.DatasetError` for a malformed line (naming the file
    and line) and for data without a single query that has a positive. Queries without any
    positive are skipped, counted in ``TrainingData.skipped`` and logged.
    """
    if isinstance(source, TrainingData):
        return source
    fields = list(rank_fields) if rank_fields else None
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if path.is_dir():
            dataset = load_beir(path, split)
            groups, _ = _beir_groups(dataset)
            kept, skipped = _keep_judged(groups, f"{path} ({split})")
            corpus = [dataset.document_text(doc_id) for doc_id in dataset.corpus]
            return TrainingData(kept, corpus, str(path), skipped)
        groups = _groups_from_rows(_file_rows(path, fields))
        name = str(path)
    else:
        groups = _groups_from_rows(_records_rows(source, fields))
        name = "<records>"
    kept, skipped = _keep_judged(groups, name)
    corpus = list(dict.fromkeys(d for g in groups for d in g.documents))
    return TrainingData(kept, corpus, name, skipped)


# -- hard negatives --------------------------------------------------------------------------
def mine_hard_negatives(
    data: TrainingData,
    num_negatives: int,
    *,
    top_k: int = 30,
    scorer: TransformerReranker | None = None,
    margin: float = 1.0,
    seed: int = 0,
) -> TrainingData:
    """``data`` with every query topped up to ``num_negatives`` negatives (see the module docstring).

    Needs ``bm25s`` (``pip install 'mxbai-rerank[eval]'``). Returns a new :class:`TrainingData`;
    the mined documents are appended to each group with label 0 and counted in ``mined``.
    """
    from ..evaluation._first_stage import bm25_search

    targets = [i for i, g in enumerate(data.groups) if len(g.negatives) < num_negatives]
    groups = [QueryGroup(g.query, list(g.documents), list(g.labels), g.instruction, g.mined) for g in data.groups]
    if not targets or not data.corpus:
        return TrainingData(groups, data.corpus, data.source, data.skipped)
    corpus = {str(i): ("", text) for i, text in enumerate(data.corpus)}
    queries = {str(i): data.groups[i].query for i in targets}
    index = BeirDataset("mining", Path("."), "train", corpus, queries, {})
    ranking, _ = bm25_search(index, min(top_k, len(corpus)), ignore_identical_ids=False)
    rng = random.Random(seed)
    skipped_false, filled_random = 0, 0
    for i in targets:
        group = groups[i]
        own = set(group.documents)
        candidates = [data.corpus[int(doc_id)] for doc_id, _ in ranking.get(str(i), [])]
        candidates = [c for c in dict.fromkeys(candidates) if c not in own]
        if scorer is not None and candidates:
            candidates, dropped = _rescore(scorer, group, candidates, margin)
            skipped_false += dropped
        need = num_negatives - len(group.negatives)
        chosen = candidates[:need]
        if len(chosen) < need:  # BM25 found too few: random documents of the corpus
            pool = [d for d in data.corpus if d not in own and d not in chosen]
            extra = rng.sample(pool, min(need - len(chosen), len(pool)))
            filled_random += len(extra)
            chosen += extra
        group.documents += chosen
        group.labels += [0.0] * len(chosen)
        group.mined += len(chosen)
    logger.info(
        "mined %d hard negatives for %d queries (%d likely false negatives skipped, %d random fill-ins)",
        sum(g.mined - o.mined for g, o in zip(groups, data.groups)), len(targets), skipped_false, filled_random,
    )  # fmt: skip
    return TrainingData(groups, data.corpus, data.source, data.skipped)


def _rescore(
    scorer: TransformerReranker, group: QueryGroup, candidates: list[str], margin: float
) -> tuple[list[str], int]:
    """Candidates the model scores below ``lowest positive - margin``, highest first; and how many were dropped."""
    positives = [group.documents[i] for i in group.positives]
    texts = positives + candidates
    scores = scorer.score_pairs([group.query] * len(texts), texts, instruction=group.instruction)
    threshold = float(min(scores[: len(positives)])) - margin
    kept = [(float(s), c) for s, c in zip(scores[len(positives) :], candidates) if s < threshold]
    kept.sort(key=lambda pair: -pair[0])
    return [c for _, c in kept], len(candidates) - len(kept)


# -- evaluation sets -------------------------------------------------------------------------
@dataclass
class EvalSet:
    """A held-out set: a BEIR dataset, the candidates to rerank per query, each query's instruction."""

    dataset: BeirDataset
    candidates: Ranking
    instructions: dict[str, str | None]

    def describe(self) -> dict[str, Any]:
        return {**self.dataset.describe(), "candidates": sum(len(c) for c in self.candidates.values())}


def eval_set_from_data(data: TrainingData, name: str = "eval", seed: int = 0) -> EvalSet:
    """An :class:`EvalSet` from judged groups: each query's candidates are its listed documents,
    in a seeded random order (the "first stage"); qrels are the labels (a fractional grade > 0 counts as 1)."""
    corpus: dict[str, tuple[str, str]] = {}
    ids: dict[str, str] = {}
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    candidates: Ranking = {}
    instructions: dict[str, str | None] = {}
    rng = random.Random(seed)
    for q, group in enumerate(data.groups):
        qid = f"q{q}"
        queries[qid] = group.query
        instructions[qid] = group.instruction
        judged: dict[str, int] = {}
        for text, label in zip(group.documents, group.labels):
            doc_id = ids.setdefault(text, f"d{len(ids)}")
            corpus[doc_id] = ("", text)
            judged[doc_id] = max(1, round(label)) if label > 0 else 0
        qrels[qid] = judged
        order = list(judged)
        rng.shuffle(order)
        candidates[qid] = [(doc_id, 0.0) for doc_id in order]
    dataset = BeirDataset(name, Path(data.source), "eval", corpus, queries, qrels)
    return EvalSet(dataset, candidates, instructions)


def load_eval_set(
    source: str | os.PathLike[str] | Sequence[Record] | TrainingData,
    *,
    split: str = "test",
    top_k: int = 100,
    max_queries: int | None = None,
    rank_fields: Sequence[str] | None = None,
) -> EvalSet:
    """A BEIR folder (BM25 top ``top_k`` of its ``split`` queries are reranked) or JSON lines /
    records in the training format (each query's listed documents are reranked)."""
    if isinstance(source, (str, os.PathLike)) and Path(source).expanduser().is_dir():
        from ..evaluation._first_stage import bm25_search

        dataset = load_beir(Path(source).expanduser(), split)
        if max_queries is not None:
            kept = list(dataset.queries)[:max_queries]
            dataset.queries = {q: dataset.queries[q] for q in kept}
            dataset.qrels = {q: dataset.qrels[q] for q in kept}
        candidates, _ = bm25_search(dataset, top_k)
        return EvalSet(dataset, candidates, dict.fromkeys(dataset.queries))
    data = load_training_data(source, rank_fields=rank_fields)
    if max_queries is not None:
        data = TrainingData(data.groups[:max_queries], [], data.source, data.skipped)
    return eval_set_from_data(data, name=Path(data.source).name or "eval")
