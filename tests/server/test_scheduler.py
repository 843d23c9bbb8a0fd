"""The dynamic-batching scheduler, in process, on the real tiny v2 model."""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import Future

import numpy as np
import pytest

from mxbai_rerank import EncodedPairs, ScorerInfo
from mxbai_rerank.server import BatchScheduler, BatchStats, SchedulerClosedError

QUERIES = ["what is a fox", "capital of france", "how do rockets fly", "best pasta recipe"]


def _requests(reranker, n: int) -> list[EncodedPairs]:
    out = []
    for i in range(n):
        query = QUERIES[i % len(QUERIES)]
        docs = [f"document {i}-{j} about {QUERIES[(i + j) % len(QUERIES)]} and more" for j in range(1 + i % 4)]
        out.append(reranker.encode_pairs([query] * len(docs), docs))
    return out


def _real_tokens(encoded: EncodedPairs) -> int:
    return sum(len(ids) for ids in encoded.input_ids)


def _busy_job(reranker) -> EncodedPairs:
    """Enough pairs that the worker is still scoring them while the test queues more."""
    docs = [f"a long filler document number {j} " * 8 for j in range(64)]
    return reranker.encode_pairs(["filler"] * len(docs), docs)


class _Recording:
    """The real reranker, recording each score_encoded call and its padded-token budget; fails on
    pairs containing ``poison_id``; its ``info()`` reports ``budget`` as its default budget."""

    def __init__(self, reranker, poison_id: int | None = None, budget: int | None = None) -> None:
        self._reranker = reranker
        self.poison_id = poison_id
        self.budget = budget
        self.calls: list[int] = []
        self.budgets: list[int | None] = []
        self._lock = threading.Lock()

    def info(self) -> ScorerInfo:
        info = self._reranker.info()
        return info if self.budget is None else dataclasses.replace(info, max_batch_tokens=self.budget)

    def score_encoded(self, encoded: EncodedPairs, *, max_batch_tokens: int | None = None) -> np.ndarray:
        with self._lock:
            self.calls.append(len(encoded))
            self.budgets.append(max_batch_tokens)
        if self.poison_id is not None and any(self.poison_id in ids for ids in encoded.input_ids):
            raise FloatingPointError("poisoned pair")
        return self._reranker.score_encoded(encoded, max_batch_tokens=max_batch_tokens)


def test_concurrent_requests_share_forward_passes_and_keep_their_scores(v2_reranker) -> None:
    requests = _requests(v2_reranker, 12)
    expected = [v2_reranker.score_encoded(r) for r in requests]
    stats: list[BatchStats] = []
    scheduler = BatchScheduler(v2_reranker, on_batch=stats.append)
    try:
        busy = scheduler.submit(_busy_job(v2_reranker))
        futures = [scheduler.submit(r) for r in requests]
        results = [f.result(timeout=60) for f in futures]
        busy.result(timeout=60)
    finally:
        scheduler.close()
    for got, want, request in zip(results, expected, requests, strict=True):
        assert got.shape == (len(request),)
        np.testing.assert_allclose(got, want, atol=1e-5)
    # The 12 requests queued behind the busy job were merged, not scored one by one.
    assert len(stats) < 1 + len(requests)
    assert max(s.requests for s in stats) > 1
    assert sum(s.requests for s in stats if s.ok) == 1 + len(requests)
    assert sum(s.pairs for s in stats) == sum(len(r) for r in requests) + 64
    assert sum(s.real_tokens for s in stats) == sum(_real_tokens(r) for r in (*requests, _busy_job(v2_reranker)))


def test_failing_merged_batch_fails_only_the_bad_request(v2_reranker) -> None:
    good = _requests(v2_reranker, 4)
    bad = v2_reranker.encode_pairs(["query"], ["a snowman ☃ document"])
    seen = {t for r in (*good, _busy_job(v2_reranker)) for ids in r.input_ids for t in ids}
    poison_id = next(t for t in bad.input_ids[0] if t not in seen)
    scorer = _Recording(v2_reranker, poison_id=poison_id)
    scheduler = BatchScheduler(scorer)
    try:
        busy = scheduler.submit(_busy_job(v2_reranker))
        futures = [scheduler.submit(r) for r in (good[0], good[1], bad, good[2], good[3])]
        busy.result(timeout=60)
        results = []
        for f in futures:
            try:
                results.append(f.result(timeout=60))
            except FloatingPointError as exc:
                results.append(exc)
        # The worker survives and keeps serving.
        again = scheduler.submit(good[0]).result(timeout=60)
    finally:
        scheduler.close()
    assert isinstance(results[2], FloatingPointError)
    for got, request in zip([results[i] for i in (0, 1, 3, 4)], good, strict=True):
        np.testing.assert_allclose(got, v2_reranker.score_encoded(request), atol=1e-5)
    np.testing.assert_allclose(again, v2_reranker.score_encoded(good[0]), atol=1e-5)
    # One merged call of all five failed, then each was retried alone.
    assert len(scorer.calls) >= 1 + 1 + 5
    assert scorer.calls[1] == sum(len(r) for r in (*good, bad))


def test_close_drains_the_queue_and_refuses_new_work(v2_reranker) -> None:
    requests = _requests(v2_reranker, 6)
    scheduler = BatchScheduler(v2_reranker)
    busy = scheduler.submit(_busy_job(v2_reranker))
    futures = [scheduler.submit(r) for r in requests]
    scheduler.close(timeout=120)
    assert not scheduler.alive
    assert busy.done()
    for f, request in zip(futures, requests, strict=True):
        assert f.done() and len(f.result()) == len(request)
    with pytest.raises(SchedulerClosedError):
        scheduler.submit(requests[0])


def test_cancelled_requests_are_not_scored_and_the_default_budget_is_the_scorers(v2_reranker) -> None:
    requests = _requests(v2_reranker, 3)
    budget = v2_reranker.info().max_batch_tokens // 2 + 7
    scorer = _Recording(v2_reranker, budget=budget)
    scheduler = BatchScheduler(scorer)
    try:
        busy = scheduler.submit(_busy_job(v2_reranker))
        kept: Future = scheduler.submit(requests[0])
        dropped = scheduler.submit(requests[1])
        assert dropped.cancel()
        kept.result(timeout=60)
        busy.result(timeout=60)
    finally:
        scheduler.close()
    assert sum(scorer.calls) == 64 + len(requests[0])
    assert scheduler.max_batch_tokens == budget and set(scorer.budgets) == {budget}


def test_step_budget_bounds_a_merged_call(v2_reranker) -> None:
    requests = _requests(v2_reranker, 6)
    smallest = min(_real_tokens(r) for r in requests)
    stats: list[BatchStats] = []
    # A budget below any request: every call takes exactly one request.
    scheduler = BatchScheduler(v2_reranker, step_tokens=smallest - 1, on_batch=stats.append)
    try:
        busy = scheduler.submit(_busy_job(v2_reranker))
        futures = [scheduler.submit(r) for r in requests]
        for f in (*futures, busy):
            f.result(timeout=60)
    finally:
        scheduler.close()
    assert [s.requests for s in stats] == [1] * (1 + len(requests))
