"""Rerank a first stage on a BEIR-format collection and measure both: :func:`evaluate`."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .. import BaseReranker, Scorer
from .._chunking import per_document, split_options
from ._beir import BeirDataset, load_beir, resolve_dataset
from ._first_stage import BM25Settings, bm25_search, candidates_from_run
from ._metrics import METRICS, compute_metrics
from ._trec import Ranking, read_trec_run, write_trec_run

logger = logging.getLogger(__name__)

RUN_FILE = "run.trec"
FIRST_STAGE_FILE = "first_stage.trec"
METRICS_FILE = "metrics.json"
# Pairs tokenized and scored per step: bounds the memory of token ids on large collections
# while leaving the token-budget batcher enough pairs to sort by length.
_CHUNK_PAIRS = 4096
# Pairs per ``predict`` call of a generic (predict-only) ``BaseReranker``.
_PREDICT_BATCH_SIZE = 32

# What :func:`evaluate` scores with: a :class:`~mxbai_rerank.Scorer` (``mxbai_rerank.load(...)``,
# or anything implementing the protocol) or a generic ``BaseReranker`` that implements ``predict``.
Reranker = Scorer | BaseReranker


@dataclass
class EvalResult:
    """Everything :func:`evaluate` measured. ``to_dict()`` is the content of ``metrics.json``."""

    model: dict[str, Any]
    dataset: dict[str, Any]
    settings: dict[str, Any]
    first_stage: dict[str, float]
    reranked: dict[str, float]
    per_query: dict[str, dict[str, dict[str, float]]]
    timing: dict[str, float]
    first_stage_run: Ranking = field(repr=False)
    run: Ranking = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        from .. import __version__

        return {
            "first_stage": self.first_stage,
            "reranked": self.reranked,
            "model": self.model,
            "dataset": self.dataset,
            "settings": self.settings,
            "timing": self.timing,
            "per_query": self.per_query,
            "version": __version__,
        }

    def write(self, output_dir: str | os.PathLike[str]) -> dict[str, Path]:
        """Write ``run.trec`` (reranked), ``first_stage.trec`` and ``metrics.json`` into ``output_dir``."""
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        tag = _run_tag(str(self.model.get("name", "")))
        paths = {
            "run": write_trec_run(self.run, out / RUN_FILE, tag=tag),
            "first_stage": write_trec_run(self.first_stage_run, out / FIRST_STAGE_FILE, tag="first_stage"),
            "metrics": out / METRICS_FILE,
        }
        paths["metrics"].write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return paths


def _run_tag(model_name: str) -> str:
    base = re.sub(r"\s+", "_", model_name.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1])
    return base or "mxbai-rerank"


def _check_reranker(reranker: object) -> None:
    if not isinstance(reranker, (Scorer, BaseReranker)):
        raise TypeError(
            "reranker must implement mxbai_rerank.Scorer (e.g. mxbai_rerank.load(...)) or be a "
            f"mxbai_rerank.BaseReranker that implements predict, got {type(reranker).__name__}"
        )


def _describe_model(reranker: Reranker) -> dict[str, Any]:
    """``metrics.json``'s ``model``: ``name`` (the model id, or the class of a generic reranker) and,
    for a :class:`~mxbai_rerank.Scorer`, its :class:`~mxbai_rerank.ScorerInfo` fields."""
    if isinstance(reranker, Scorer):
        info = reranker.info()
        return {"name": info.model_id, **info.to_dict()}
    return {"name": type(reranker).__name__}


def _score(
    reranker: Reranker,
    groups: Sequence[tuple[str, list[str]]],
    instruction: str | None,
    max_batch_tokens: int | None,
    chunking: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """Scores of every ``(query, document)`` of ``groups`` (one query, its documents), in order."""
    if isinstance(reranker, Scorer):
        # One call for the whole chunk: the forward passes are packed by tokens across queries.
        queries = [query for query, docs in groups for _ in docs]
        documents = [doc for _, docs in groups for doc in docs]
        options, aggregate = split_options(chunking)
        encoded = reranker.encode_pairs(queries, documents, instruction=instruction, **options)
        raw = per_document(reranker.score_encoded(encoded, max_batch_tokens=max_batch_tokens), encoded, aggregate)
        return np.asarray(reranker.postprocess(raw), dtype=np.float64)
    if chunking:
        raise ValueError("long-document chunking needs a Scorer (mxbai_rerank.load(...)), not a predict-only reranker")
    # A generic BaseReranker: its public ``rank``, which batches ``predict`` calls.
    extra = {"instruction": instruction} if instruction else {}
    parts = []
    for query, docs in groups:
        results = reranker.rank(
            query,
            docs,
            top_k=len(docs),
            batch_size=_PREDICT_BATCH_SIZE,
            sort=False,
            return_documents=False,
            **extra,
        )
        scores = np.empty(len(docs), dtype=np.float64)
        scores[[r.index for r in results]] = [r.score for r in results]
        parts.append(scores)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float64)


def rerank_candidates(
    reranker: Reranker,
    dataset: BeirDataset,
    candidates: Ranking,
    *,
    instruction: str | None = None,
    max_batch_tokens: int | None = None,
    chunking: Mapping[str, Any] | None = None,
    show_progress: bool = False,
) -> Ranking:
    """Score every (query, candidate) pair and order each query's candidates by score.

    Equal scores keep the first-stage order. The reranker sees ``title + " " + text``.
    """
    _check_reranker(reranker)
    qids = [qid for qid, docs in candidates.items() if docs]
    reranked: Ranking = {qid: [] for qid in candidates}
    total = sum(len(candidates[q]) for q in qids)
    with tqdm(total=total, desc="Reranking", unit="doc", disable=not show_progress) as bar:
        start = 0
        while start < len(qids):
            # Whole queries per chunk; a query with more than _CHUNK_PAIRS candidates is one chunk.
            stop, size = start, 0
            while stop < len(qids) and (stop == start or size + len(candidates[qids[stop]]) <= _CHUNK_PAIRS):
                size += len(candidates[qids[stop]])
                stop += 1
            chunk = qids[start:stop]
            groups = [(dataset.queries[q], [dataset.document_text(d) for d, _ in candidates[q]]) for q in chunk]
            scores = _score(reranker, groups, instruction, max_batch_tokens, chunking)
            offset = 0
            for qid in chunk:
                docs = candidates[qid]
                own = scores[offset : offset + len(docs)]
                offset += len(docs)
                order = sorted(range(len(docs)), key=lambda j: (-float(own[j]), j))
                reranked[qid] = [(docs[j][0], float(own[j])) for j in order]
            bar.update(size)
            start = stop
    return reranked


def evaluate(
    reranker: Reranker,
    dataset: BeirDataset | str | os.PathLike[str],
    *,
    split: str = "test",
    first_stage: str | os.PathLike[str] | Mapping[str, Sequence[tuple[str, float]]] = "bm25",
    top_k: int = 100,
    instruction: str | None = None,
    max_queries: int | None = None,
    max_batch_tokens: int | None = None,
    bm25: BM25Settings | None = None,
    ignore_identical_ids: bool = True,
    metrics: Sequence[str] = METRICS,
    output_dir: str | os.PathLike[str] | None = None,
    chunking: Mapping[str, Any] | None = None,
    show_progress: bool = False,
) -> EvalResult:
    """Evaluate ``reranker`` on a BEIR-format collection: first stage, rerank its top-k, compare.

    Args:
        reranker: A :class:`~mxbai_rerank.Scorer` (``mxbai_rerank.load(...)``) or a generic
            :class:`~mxbai_rerank.BaseReranker` that implements ``predict`` (scored through ``rank``).
        dataset: A loaded :class:`BeirDataset`, a collection directory, or ``"beir:NAME"``.
        split: The qrels split to evaluate (``qrels/<split>.tsv``).
        first_stage: ``"bm25"``, the path of a TREC run file, or a ranking
            ``{query id: [(doc id, score), ...]}`` (best first).
        top_k: Candidates reranked per query.
        instruction: v2 models only: an instruction prepended to each query.
        max_queries: Evaluate only the first N queries of the split (quick checks).
        max_batch_tokens: Token budget per forward pass (default: the model's).
        bm25: BM25 parameters when ``first_stage="bm25"``.
        ignore_identical_ids: Never use a document whose id equals the query id (as BEIR).
        metrics: ranx metric names.
        output_dir: When given, write ``run.trec``, ``first_stage.trec`` and ``metrics.json`` there.
        chunking: Long-document options, as for ``rank``: ``{"long_documents": "chunk"}`` and
            optionally ``chunk_size``, ``chunk_stride``, ``chunk_aggregate``.
        show_progress: Progress bars.
    """
    _check_reranker(reranker)
    if top_k <= 0:
        raise ValueError(f"top_k must be a positive integer, got {top_k}")
    if max_queries is not None and max_queries <= 0:
        raise ValueError(f"max_queries must be a positive integer, got {max_queries}")
    if not isinstance(dataset, BeirDataset):
        path, name = resolve_dataset(dataset, show_progress=show_progress)
        dataset = load_beir(path, split, name=name)
    if max_queries is not None and max_queries < len(dataset.queries):
        kept = list(dataset.queries)[:max_queries]
        dataset = BeirDataset(
            name=dataset.name,
            path=dataset.path,
            split=dataset.split,
            corpus=dataset.corpus,
            queries={q: dataset.queries[q] for q in kept},
            qrels={q: dataset.qrels[q] for q in kept},
            info=dataset.info,
        )

    settings: dict[str, Any] = {
        "top_k": top_k,
        "instruction": instruction,
        "max_queries": max_queries,
        "max_batch_tokens": max_batch_tokens,
        "ignore_identical_ids": ignore_identical_ids,
        "metrics": list(metrics),
        "chunking": dict(chunking or {}),
    }
    started = time.perf_counter()
    if isinstance(first_stage, Mapping):
        candidates, unknown = candidates_from_run(
            {q: list(d) for q, d in first_stage.items()}, dataset, top_k, ignore_identical_ids=ignore_identical_ids
        )
        settings.update(first_stage="ranking", unknown_documents=unknown)
    elif os.fspath(first_stage) == "bm25":
        candidates, used = bm25_search(
            dataset, top_k, settings=bm25, ignore_identical_ids=ignore_identical_ids, show_progress=show_progress
        )
        settings.update(first_stage="bm25", bm25=used)
    else:
        run = read_trec_run(first_stage)
        candidates, unknown = candidates_from_run(run, dataset, top_k, ignore_identical_ids=ignore_identical_ids)
        settings.update(first_stage=str(first_stage), unknown_documents=unknown)
    first_stage_s = time.perf_counter() - started

    started = time.perf_counter()
    reranked = rerank_candidates(
        reranker,
        dataset,
        candidates,
        instruction=instruction,
        max_batch_tokens=max_batch_tokens,
        chunking=chunking,
        show_progress=show_progress,
    )
    rerank_s = time.perf_counter() - started

    before = compute_metrics(dataset.qrels, candidates, metrics)
    after = compute_metrics(dataset.qrels, reranked, metrics)
    num_pairs = sum(len(docs) for docs in candidates.values())
    num_reranked_queries = sum(1 for docs in candidates.values() if docs)
    timing = {
        "first_stage_s": first_stage_s,
        "rerank_s": rerank_s,
        "num_queries": num_reranked_queries,
        "num_pairs": num_pairs,
        "queries_per_s": num_reranked_queries / rerank_s if rerank_s > 0 else 0.0,
        "documents_per_s": num_pairs / rerank_s if rerank_s > 0 else 0.0,
    }
    result = EvalResult(
        model=_describe_model(reranker),
        dataset=dataset.describe(),
        settings=settings,
        first_stage=before.mean,
        reranked=after.mean,
        per_query={q: {"first_stage": before.per_query[q], "reranked": after.per_query[q]} for q in dataset.qrels},
        timing=timing,
        first_stage_run=candidates,
        run=reranked,
    )
    logger.info("reranked %d pairs of %d queries in %.2fs", num_pairs, num_reranked_queries, rerank_s)
    if output_dir is not None:
        result.write(output_dir)
    return result
