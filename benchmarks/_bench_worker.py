"""One measurement in a fresh process: load a v2 reranker, rank the passages, report JSON.

Runs under either implementation: whichever ``mxbai_rerank`` the interpreter imports
(upstream 0.1.6 in its own virtualenv, or this package). Peak RSS is the process's own
``ru_maxrss``, so model loading and scoring are both counted, the same way for both.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--passages", required=True, help="JSON file: {'query': str, 'documents': [str]}")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--torch-dtype", default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    import mxbai_rerank
    from mxbai_rerank import MxbaiRerankV2

    with open(args.passages, encoding="utf-8") as f:
        data = json.load(f)
    kwargs = {}
    if args.torch_dtype:
        kwargs["torch_dtype"] = getattr(torch, args.torch_dtype)
    if args.device:
        kwargs["device"] = args.device
    t0 = time.perf_counter()
    reranker = MxbaiRerankV2(args.model, **kwargs)
    load_s = time.perf_counter() - t0
    reranker.rank(data["query"], data["documents"][:2])  # warm-up: kernels, allocator, oneDNN
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.repeats):
        sync()
        t = time.perf_counter()
        results = reranker.rank(data["query"], data["documents"], top_k=len(data["documents"]))
        sync()
        times.append(time.perf_counter() - t)
    seconds = statistics.median(times)
    dtype = getattr(reranker, "dtype", None) or next(reranker.model.parameters()).dtype
    out = {
        "implementation": f"{mxbai_rerank.__name__} {getattr(mxbai_rerank, '__version__', '0.1.6 (upstream)')}",
        "version": getattr(mxbai_rerank, "__version__", "0.1.6"),
        "dtype": str(dtype).removeprefix("torch."),
        "device": str(next(reranker.model.parameters()).device),
        "load_s": load_s,
        "times_s": times,
        "seconds_per_query": seconds,
        "docs_per_s": len(data["documents"]) / seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
        "top3": [(r.index, round(float(r.score), 4)) for r in results[:3]],
        "torch": torch.__version__,
        "python": sys.version.split()[0],
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
