"""Retrieval metrics computed by ``ranx`` (trec_eval-compatible definitions)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .._extras import require
from ._trec import Ranking

METRICS: tuple[str, ...] = ("ndcg@10", "mrr@10", "recall@100")


@dataclass
class MetricReport:
    """Metric means over all judged queries, and each query's values."""

    mean: dict[str, float]
    per_query: dict[str, dict[str, float]]


def compute_metrics(
    qrels: Mapping[str, Mapping[str, int]], ranking: Ranking, metrics: Sequence[str] = METRICS
) -> MetricReport:
    """Evaluate the ranking exactly in its list order against ``qrels``.

    Every query of ``qrels`` counts; one absent from ``ranking`` scores 0, and queries of
    ``ranking`` without judgements are ignored (as trec_eval does).
    """
    ranx = require("ranx", "eval")
    metrics = list(metrics)
    # ranx orders each query's documents with an unstable sort on the score, so equal scores
    # could be evaluated in another order than the one written to the run file. Strictly
    # decreasing rank-derived scores make ranx evaluate exactly the given order.
    run_dict = {
        qid: {doc_id: float(len(docs) - i) for i, (doc_id, _) in enumerate(docs)}
        for qid, docs in ranking.items()
        if docs and qid in qrels
    }
    zero = {metric: 0.0 for metric in metrics}
    if not run_dict:
        return MetricReport(mean=dict(zero), per_query={qid: dict(zero) for qid in qrels})
    qrels_obj = ranx.Qrels({qid: {d: int(r) for d, r in docs.items()} for qid, docs in qrels.items()})
    run_obj = ranx.Run(run_dict)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba's type-safety warnings from inside ranx
        means = ranx.evaluate(qrels_obj, run_obj, metrics, make_comparable=True)
    if len(metrics) == 1:
        means = {metrics[0]: means}
    per_query = {qid: {m: float(run_obj.scores[m][qid]) for m in metrics} for qid in qrels}
    return MetricReport(mean={m: float(means[m]) for m in metrics}, per_query=per_query)
