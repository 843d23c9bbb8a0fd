"""Evaluation and benchmarking of rerankers, usable from Python (the ``eval``/``bench`` CLI wraps it).

>>> import mxbai_rerank
>>> from mxbai_rerank.evaluation import evaluate
>>> reranker = mxbai_rerank.load("mixedbread-ai/mxbai-rerank-base-v2")
>>> result = evaluate(reranker, "path/to/scifact", first_stage="bm25", top_k=100, output_dir="out")
>>> result.first_stage["ndcg@10"], result.reranked["ndcg@10"]

Metrics are computed by ``ranx`` and BM25 by ``bm25s`` (``pip install 'mxbai-rerank[eval]'``).
"""

from __future__ import annotations

from ._beir import BeirDataset, DatasetError, download_beir, load_beir, resolve_dataset
from ._evaluate import EvalResult, evaluate, rerank_candidates
from ._first_stage import BM25Settings, bm25_search, candidates_from_run
from ._metrics import METRICS, MetricReport, compute_metrics
from ._speed import BenchResult, benchmark
from ._text import Workload, generate_workload, stdlib_sentences, workload_from_documents
from ._trec import Ranking, RunFileError, read_trec_run, write_trec_run

__all__ = [
    "METRICS",
    "BM25Settings",
    "BeirDataset",
    "BenchResult",
    "DatasetError",
    "EvalResult",
    "MetricReport",
    "Ranking",
    "RunFileError",
    "Workload",
    "benchmark",
    "bm25_search",
    "candidates_from_run",
    "compute_metrics",
    "download_beir",
    "evaluate",
    "generate_workload",
    "load_beir",
    "read_trec_run",
    "rerank_candidates",
    "resolve_dataset",
    "stdlib_sentences",
    "workload_from_documents",
    "write_trec_run",
]
