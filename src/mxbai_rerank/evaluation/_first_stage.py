"""First-stage candidates: BM25 over title + text (``bm25s``), or the top of a given run."""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import asdict, dataclass
from typing import Any

from .._extras import require
from ._beir import BeirDataset
from ._trec import Ranking

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BM25Settings:
    """BM25 parameters. ``k1``/``b`` default to Elasticsearch's (BEIR's BM25 baseline).

    ``stemmer="auto"`` stems English with PyStemmer when it is installed and does not stem
    otherwise; the choice made is recorded in the evaluation settings.
    """

    k1: float = 1.2
    b: float = 0.75
    method: str = "lucene"
    stopwords: str = "en"
    stemmer: str = "auto"


def _stemmer(choice: str) -> tuple[Any, str]:
    if choice == "none" or (choice == "auto" and importlib.util.find_spec("Stemmer") is None):
        return None, "none"
    stemmer_mod = require("Stemmer", "eval")
    language = "english" if choice == "auto" else choice
    return stemmer_mod.Stemmer(language).stemWord, language


def bm25_search(
    dataset: BeirDataset,
    top_k: int,
    *,
    settings: BM25Settings | None = None,
    ignore_identical_ids: bool = True,
    show_progress: bool = False,
) -> tuple[Ranking, dict[str, Any]]:
    """The ``top_k`` BM25 documents of each query of ``dataset`` and the settings used.

    Only documents sharing a term with the query are returned (score > 0). Equal scores are
    ordered by position in the corpus. With ``ignore_identical_ids`` a document whose id equals
    the query id is never a candidate (BEIR's default, which matters for ArguAna and Quora).
    """
    if top_k <= 0:
        raise ValueError(f"top_k must be positive, got {top_k}")
    settings = settings or BM25Settings()
    bm25s = require("bm25s", "eval")
    stem, stemmer_name = _stemmer(settings.stemmer)
    doc_ids = list(dataset.corpus)
    position = {doc_id: i for i, doc_id in enumerate(doc_ids)}
    texts = [dataset.document_text(doc_id) for doc_id in doc_ids]
    corpus_tokens = bm25s.tokenize(texts, stopwords=settings.stopwords, stemmer=stem, show_progress=show_progress)
    retriever = bm25s.BM25(k1=settings.k1, b=settings.b, method=settings.method)
    retriever.index(corpus_tokens, show_progress=show_progress)
    qids = list(dataset.queries)
    query_tokens = bm25s.tokenize(
        [dataset.queries[q] for q in qids],
        stopwords=settings.stopwords,
        stemmer=stem,
        show_progress=False,
        return_ids=False,
    )
    # One extra candidate makes up for a query's own id being dropped.
    k = min(top_k + int(ignore_identical_ids), len(doc_ids))
    indices, scores = retriever.retrieve(query_tokens, k=k, show_progress=show_progress)
    ranking: Ranking = {}
    for row, qid in enumerate(qids):
        hits = [
            (doc_ids[int(i)], float(s))
            for i, s in zip(indices[row], scores[row], strict=True)
            if s > 0 and not (ignore_identical_ids and doc_ids[int(i)] == qid)
        ]
        hits.sort(key=lambda hit: (-hit[1], position[hit[0]]))
        ranking[qid] = hits[:top_k]
    used = {**asdict(settings), "stemmer": stemmer_name, "ignore_identical_ids": ignore_identical_ids}
    return ranking, used


def candidates_from_run(
    run: Ranking, dataset: BeirDataset, top_k: int, *, ignore_identical_ids: bool = True
) -> tuple[Ranking, int]:
    """The first ``top_k`` documents of ``run`` for each query of ``dataset``, and how many
    listed documents were dropped for not being in the corpus."""
    if top_k <= 0:
        raise ValueError(f"top_k must be positive, got {top_k}")
    ranking: Ranking = {}
    unknown = 0
    for qid in dataset.queries:
        kept = []
        for doc_id, score in run.get(qid, []):
            if doc_id not in dataset.corpus:
                unknown += 1
            elif not (ignore_identical_ids and doc_id == qid):
                kept.append((doc_id, score))
        ranking[qid] = kept[:top_k]
    if unknown:
        logger.warning("the run lists %d document id(s) that are not in the corpus; they are skipped", unknown)
    if not any(ranking.values()):
        raise ValueError(
            "the run has no candidates for this split: its query or document ids do not match the collection"
        )
    return ranking, unknown
