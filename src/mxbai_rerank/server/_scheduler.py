"""Dynamic batching: one worker thread owns the model and merges queued requests.

Requests arrive as :class:`~mxbai_rerank.EncodedPairs` from any thread. The worker takes
everything queued (first in, first out) up to ``step_tokens`` real tokens, concatenates it,
runs one :meth:`~mxbai_rerank.Scorer.score_encoded` call (which packs forward passes of at most
``max_batch_tokens`` padded tokens internally) and splits the raw scores back per request, so
concurrent small requests share forward passes.

Two token counts appear here and must not be confused: *real* tokens are the unpadded token
ids of a request (what it costs, what ``usage`` reports); *padded* tokens are rows x longest
row of one forward pass (what the memory budget ``max_batch_tokens`` bounds).

Invariants:

* every accepted job's future is resolved exactly once (result, exception or cancellation),
  also when the scheduler is closed: :meth:`BatchScheduler.close` drains the queue before the
  worker exits;
* a job whose future is cancelled (its client went away) while it waits leaves the queue at
  once; one cancelled after the worker took it into a merged batch, but before that batch's
  scoring call started, is dropped from the batch; only a job already being scored runs to
  the end (its result is discarded);
* if a merged call fails, each of its jobs is retried alone, so a bad request fails only itself;
* the worker never dies from a scoring error.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from .._encoding import EncodedPairs
from .._scorer import Scorer

__all__ = ["BatchScheduler", "BatchStats", "SchedulerClosedError"]

logger = logging.getLogger(__name__)


class SchedulerClosedError(RuntimeError):
    """The scheduler was closed and accepts no new work."""


def real_tokens(encoded: EncodedPairs) -> int:
    """Unpadded tokens of ``encoded``: the sum of its sequence lengths."""
    return sum(len(ids) for ids in encoded.input_ids)


@dataclass(frozen=True)
class BatchStats:
    """One ``score_encoded`` call made by the worker."""

    requests: int
    pairs: int
    real_tokens: int  # unpadded tokens of all pairs in the call
    seconds: float
    queue_waits: tuple[float, ...]
    ok: bool


@dataclass(eq=False)  # identity: a job is found in the queue by ``is``, never by value
class _Job:
    encoded: EncodedPairs
    real_tokens: int
    future: Future[np.ndarray]
    enqueued_at: float


class BatchScheduler:
    """Queue of encoded requests served by one worker thread (see the module docstring).

    Args:
        scorer: The :class:`~mxbai_rerank.Scorer` to run; only this worker calls its ``score_encoded``.
        max_batch_tokens: Padded tokens per forward pass; default: ``scorer.info().max_batch_tokens``.
        step_tokens: Most real (unpadded) tokens merged into one ``score_encoded`` call; a single
            larger request is still taken alone. Default: ``max_batch_tokens``.
        on_batch: Called from the worker thread after every ``score_encoded`` call.
    """

    def __init__(
        self,
        scorer: Scorer,
        *,
        max_batch_tokens: int | None = None,
        step_tokens: int | None = None,
        on_batch: Callable[[BatchStats], None] | None = None,
    ) -> None:
        self._scorer = scorer
        self.max_batch_tokens = int(max_batch_tokens or scorer.info().max_batch_tokens)
        self.step_tokens = int(step_tokens or self.max_batch_tokens)
        if self.max_batch_tokens <= 0 or self.step_tokens <= 0:
            raise ValueError("max_batch_tokens and step_tokens must be positive")
        self._on_batch = on_batch
        self._queue: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="mxbai-rerank-scheduler", daemon=True)
        self._thread.start()

    # -- client side ---------------------------------------------------------------------
    def submit(self, encoded: EncodedPairs) -> Future[np.ndarray]:
        """Queue ``encoded``; the future gives its raw scores (float32, input order)."""
        future: Future[np.ndarray] = Future()
        if len(encoded) == 0:
            future.set_result(np.zeros(0, dtype=np.float32))
            return future
        job = _Job(encoded, real_tokens(encoded), future, time.perf_counter())
        with self._cond:
            if self._closed:
                raise SchedulerClosedError("the scheduler is shut down")
            self._queue.append(job)
            self._cond.notify()
        future.add_done_callback(lambda done: self._discard(job) if done.cancelled() else None)
        return future

    def _discard(self, job: _Job) -> None:
        """Take a cancelled job out of the queue (it may already have been taken)."""
        with self._cond, contextlib.suppress(ValueError):
            self._queue.remove(job)

    @property
    def queue_depth(self) -> int:
        """Requests waiting for the worker (not counting the batch being scored)."""
        return len(self._queue)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting work, score everything already queued, and stop the worker."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)

    # -- worker side ---------------------------------------------------------------------
    def _take(self) -> list[_Job] | None:
        """The next batch of jobs not cancelled so far, or None once closed and drained."""
        with self._cond:
            while True:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return None
                jobs: list[_Job] = []
                tokens = 0
                while self._queue and (not jobs or tokens + self._queue[0].real_tokens <= self.step_tokens):
                    job = self._queue.popleft()
                    if not job.future.cancelled():
                        jobs.append(job)
                        tokens += job.real_tokens
                if jobs:
                    return jobs

    @staticmethod
    def _start(jobs: list[_Job]) -> list[_Job]:
        """The jobs still wanted; from here on their futures can no longer be cancelled."""
        return [job for job in jobs if job.future.set_running_or_notify_cancel()]

    def _run(self) -> None:
        while (taken := self._take()) is not None:
            jobs = self._start(taken)
            if not jobs:
                continue
            try:
                self._execute(jobs)
            except BaseException as exc:  # pragma: no cover - last resort: never leave a future pending
                logger.exception("scheduler worker error")
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(exc)

    def _execute(self, jobs: list[_Job]) -> None:
        merged = jobs[0].encoded if len(jobs) == 1 else EncodedPairs.concat([job.encoded for job in jobs])
        started = time.perf_counter()
        try:
            raw = self._scorer.score_encoded(merged, max_batch_tokens=self.max_batch_tokens)
        except Exception as exc:
            self._record(jobs, merged, started, ok=False)
            if len(jobs) == 1:
                # The caller gets the exception (the server logs it with the request's id).
                logger.debug("scoring a request of %d pairs failed: %s", len(merged), exc)
                jobs[0].future.set_exception(exc)
                return
            logger.warning("a merged batch of %d requests failed (%s); retrying each alone", len(jobs), exc)
            for job in jobs:
                self._execute([job])
            return
        self._record(jobs, merged, started, ok=True)
        start = 0
        for job in jobs:
            end = start + len(job.encoded)
            job.future.set_result(raw[start:end].copy())
            start = end

    def _record(self, jobs: list[_Job], merged: EncodedPairs, started: float, *, ok: bool) -> None:
        if self._on_batch is None:
            return
        stats = BatchStats(
            requests=len(jobs),
            pairs=len(merged),
            real_tokens=sum(job.real_tokens for job in jobs),
            seconds=time.perf_counter() - started,
            queue_waits=tuple(started - job.enqueued_at for job in jobs),
            ok=ok,
        )
        try:
            self._on_batch(stats)
        except Exception:  # metrics must never break scoring
            logger.exception("on_batch callback failed")
