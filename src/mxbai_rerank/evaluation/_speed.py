"""Speed and memory of a loaded reranker on a workload: :func:`benchmark`."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any

import numpy as np
import torch

from .. import EncodedPairs, Scorer
from ._text import Workload

logger = logging.getLogger(__name__)

_MB = 1024 * 1024


@dataclass
class BenchResult:
    """One measured setting. Latency is per query (all its documents in one call).

    ``to_dict()`` keys (the ``results`` of ``mxbai-rerank bench --json``):

    * ``model``, ``device``, ``dtype``, ``max_length``: from the scorer's ``info()``.
    * ``max_batch_tokens``: the budget of *padded* tokens (rows x longest row) per forward pass.
    * ``queries``, ``docs_per_query``, ``pairs``: the workload.
    * ``real_tokens``: the *real* (unpadded) tokens of all pairs, prompt template included.
    * ``seconds``: the timed loop; ``documents_per_s = pairs / seconds`` and
      ``tokens_per_s = real_tokens / seconds`` (real tokens, not padding).
    * ``latency_ms_p50``/``p95``/``mean``: per query.
    * ``peak_rss_mb`` (sampled during the loop), ``max_rss_mb`` (process lifetime),
      ``gpu_peak_allocated_mb`` (CUDA only), ``load_s`` (when the caller timed the load).
    """

    model: str
    device: str
    dtype: str
    max_batch_tokens: int
    max_length: int | None
    queries: int
    docs_per_query: float
    pairs: int
    real_tokens: int
    seconds: float
    documents_per_s: float
    tokens_per_s: float
    latency_ms_p50: float
    latency_ms_p95: float
    latency_ms_mean: float
    # Highest RSS sampled during the timed loop (psutil), and the process's lifetime peak (ru_maxrss).
    peak_rss_mb: float | None
    max_rss_mb: float | None
    gpu_peak_allocated_mb: float | None
    load_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _lifetime_max_rss_mb() -> float | None:
    try:
        import resource
        import sys
    except ImportError:  # not on Unix
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / _MB if sys.platform == "darwin" else peak / 1024


class _RssSampler:
    """Samples this process's RSS in a background thread; ``peak_mb`` is None without psutil."""

    def __init__(self, interval_s: float = 0.005) -> None:
        self.interval_s = interval_s
        self.peak_mb: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            import psutil
        except ImportError:
            self._process = None
        else:
            self._process = psutil.Process()

    def _sample(self) -> None:
        assert self._process is not None
        rss = self._process.memory_info().rss / _MB
        self.peak_mb = rss if self.peak_mb is None else max(self.peak_mb, rss)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> _RssSampler:
        if self._process is not None:
            self._sample()
            self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._sample()


def _real_tokens(encoded: EncodedPairs) -> int:
    """Unpadded token count of encoded pairs (what the model reads, before any batch padding)."""
    return sum(len(ids) for ids in encoded.input_ids)


def benchmark(
    reranker: Scorer,
    workload: Workload,
    *,
    max_batch_tokens: int | None = None,
    instruction: str | None = None,
    warmup: int = 1,
    load_s: float | None = None,
) -> BenchResult:
    """Time a :class:`~mxbai_rerank.Scorer` on each query of ``workload`` (after ``warmup`` untimed queries).

    One timed call per query: ``encode_pairs``, ``score_encoded`` (token-budget batches of at
    most ``max_batch_tokens`` padded tokens, default the scorer's) and ``postprocess``. Latency
    thus covers tokenization, batching, the forward passes and the copy of the scores back to
    the host (which waits for the GPU), i.e. what a caller of ``rank`` waits for.
    """
    if not isinstance(reranker, Scorer):
        raise TypeError(
            f"benchmark needs a mxbai_rerank.Scorer (e.g. mxbai_rerank.load(...)), got {type(reranker).__name__}"
        )
    if not workload.queries:
        raise ValueError("the workload has no queries")
    info = reranker.info()
    budget = int(max_batch_tokens or info.max_batch_tokens)
    device = torch.device(info.device)
    pairs = [([q] * len(docs), docs) for q, docs in zip(workload.queries, workload.documents, strict=True)]
    real_tokens = sum(_real_tokens(reranker.encode_pairs(qs, ds, instruction=instruction)) for qs, ds in pairs)

    def score(queries: list[str], documents: list[str]) -> np.ndarray:
        encoded = reranker.encode_pairs(queries, documents, instruction=instruction)
        return reranker.postprocess(reranker.score_encoded(encoded, max_batch_tokens=budget))

    for qs, ds in pairs[: max(warmup, 0)]:
        score(qs, ds)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    latencies = []
    with _RssSampler() as rss:
        for qs, ds in pairs:
            started = time.perf_counter()
            score(qs, ds)
            latencies.append(time.perf_counter() - started)
    gpu_peak = torch.cuda.max_memory_allocated(device) / _MB if device.type == "cuda" else None
    seconds = float(sum(latencies))
    num_pairs = sum(len(ds) for _, ds in pairs)
    lat_ms = np.asarray(latencies) * 1000.0
    result = BenchResult(
        model=info.model_id,
        device=info.device,
        dtype=info.dtype,
        max_batch_tokens=budget,
        max_length=info.max_length,
        queries=len(pairs),
        docs_per_query=num_pairs / len(pairs),
        pairs=num_pairs,
        real_tokens=real_tokens,
        seconds=seconds,
        documents_per_s=num_pairs / seconds if seconds > 0 else 0.0,
        tokens_per_s=real_tokens / seconds if seconds > 0 else 0.0,
        latency_ms_p50=float(np.percentile(lat_ms, 50)),
        latency_ms_p95=float(np.percentile(lat_ms, 95)),
        latency_ms_mean=float(lat_ms.mean()),
        peak_rss_mb=rss.peak_mb,
        max_rss_mb=_lifetime_max_rss_mb(),
        gpu_peak_allocated_mb=gpu_peak,
        load_s=load_s,
    )
    logger.info("%s %s budget=%d: %.1f docs/s", result.device, result.dtype, budget, result.documents_per_s)
    return result
