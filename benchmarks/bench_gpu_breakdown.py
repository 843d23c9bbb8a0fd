"""Where the time of a cold top-100 query goes on a GPU, and what the packed path's knobs change.

One process, this package only (``bench_gpu.py`` has the side-by-side table with upstream).
For each of ``--queries`` cold queries (100 new passages each, the ``cold`` work of
``bench_gpu.py``), with the packed backend:

* ``rank``: ``rank()`` end to end (the number ``bench_gpu.py`` reports), timed first, while the
  tokenizer meets the passages for the first time;
* ``encode``: tokenization and prompt assembly on the host (a second time: tokenizers cache words);
* ``launch``: host time to enqueue the packed forward pass(es), nothing waited for;
* ``device``: the forward pass on the GPU, from CUDA events around it;
* ``pipelined k``: the pairs split into k slices, each encoded while the GPU runs the previous
  one, one synchronisation at the end (what overlapping tokenization with the GPU would give).

Then throughput on the ``throughput`` work, pre-tokenized at several ``max_batch_tokens`` (chunk
sizes) and with the padded ``torch`` backend, and from text through ``score_pairs`` (tokenizing
overlapped with the device), checking that every variant's scores agree.

    PYTHONPATH=src python3 benchmarks/bench_gpu_breakdown.py --model DIR      # a v2 checkpoint
    .venv/bin/python benchmarks/bench_gpu_breakdown.py --shape tiny           # CPU smoke run

Prints a table; writes ``results/gpu_breakdown_<device>.json`` (``--output``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a v2 checkpoint (default: built at --shape)")
    parser.add_argument("--shape", choices=["tiny", "base", "large"], default="base")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--queries", type=int, default=8, help="cold queries timed")
    parser.add_argument("--docs", type=int, default=100, help="passages per query")
    parser.add_argument("--throughput-queries", type=int, default=28)
    parser.add_argument("--chunk-tokens", default="8192,16384,32768,65536", help="max_batch_tokens swept")
    parser.add_argument("--compile", action="store_true", help="load with compile=True; reports the load "
                        "time, a new shape's time after it, and the distance to eager scores")  # fmt: skip
    parser.add_argument("--profile", action="store_true", help="profile one cold query's packed forward: "
                        "GPU time per kernel kind, top kernels and host ops")  # fmt: skip
    parser.add_argument("--output", default=None)
    args = parser.parse_args()

    import bench_gpu
    from _common import benchmark_checkpoint, machine

    from mxbai_rerank import MxbaiRerankV2
    from mxbai_rerank._engine._attention import varlen_kernel

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    model = Path(args.model) if args.model else benchmark_checkpoint(args.shape)
    sizes = dict(bench_gpu.SIZES["full"])
    sizes.update(cold_queries=args.queries + 1, docs=args.docs, throughput_queries=args.throughput_queries,
                 long_docs=1, long_tokens=16)  # fmt: skip
    work = bench_gpu.workloads(model, sizes)
    queries, documents = work["cold"]["queries"], work["cold"]["documents"]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    t = time.perf_counter()
    reranker = MxbaiRerankV2(str(model), device=str(device), backend="packed", compile=False)
    timings = {"load_s": time.perf_counter() - t}
    eager: list[np.ndarray] = []
    if args.compile:  # the library's compile=True, against this eager model's scores
        eager = [reranker.score_pairs([q] * len(d), d) for q, d in zip(queries[:-1], documents[:-1])]
        t = time.perf_counter()
        reranker = MxbaiRerankV2(str(model), device=str(device), backend="packed", compile=True)
        timings["compiled_load_s"] = time.perf_counter() - t
        t = time.perf_counter()
        reranker.rank(queries[-1], documents[-1])  # a shape the load-time compile never saw
        sync()
        timings["second_shape_s"] = time.perf_counter() - t
    engine = reranker.engine
    report: dict[str, Any] = {"machine": machine(), "model": str(model), "device": str(device),
                              "dtype": str(engine.dtype), "kernel": varlen_kernel(device, engine.dtype),
                              "packs": engine.backend.packs(engine), **timings}  # fmt: skip
    if cuda:
        report["gpu"] = torch.cuda.get_device_name(device)
        report["torch"] = torch.__version__

    def launch(encoded: Any) -> torch.Tensor:
        """The packed backend's forward passes of ``encoded``, enqueued: (N,) scores on the device."""
        return engine.backend.launch(engine, encoded, max_batch_tokens=engine.max_batch_tokens, batch_size=len(encoded))

    reranker.rank(queries[-1], documents[-1][:4])  # warm-up: allocator and kernels
    sync()
    rows: dict[str, list[float]] = {"encode": [], "launch": [], "device": [], "sequential": [], "rank": []}
    pipelined: dict[int, list[float]] = {2: [], 4: []}
    worst = 0.0
    with torch.inference_mode():
        for q, docs in zip(queries[:-1], documents[:-1]):
            qs = [q] * len(docs)
            # rank() first: the tokenizer meets these passages for the first time, as in serving.
            sync()
            t = time.perf_counter()
            ranked = reranker.rank(q, docs, top_k=len(docs), sort=False)
            sync()
            rows["rank"].append(time.perf_counter() - t)
            by_index = np.array([r.score for r in sorted(ranked, key=lambda r: r.index)], dtype=np.float32)
            sync()
            t0 = time.perf_counter()
            encoded = engine.encode(qs, docs)
            t1 = time.perf_counter()
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
            scores = launch(encoded)
            t2 = time.perf_counter()
            if cuda:
                end.record()
            reference = scores.cpu().numpy()
            t3 = time.perf_counter()
            rows["encode"].append(t1 - t0)
            rows["launch"].append(t2 - t1)
            rows["device"].append(start.elapsed_time(end) / 1e3 if cuda else t3 - t1)
            rows["sequential"].append(t3 - t0)
            for k in pipelined:
                sync()
                t = time.perf_counter()
                bounds = np.linspace(0, len(docs), k + 1).astype(int)
                parts = [launch(engine.encode(qs[a:b], docs[a:b])) for a, b in itertools.pairwise(bounds)]
                got = torch.cat(parts).cpu().numpy()
                pipelined[k].append(time.perf_counter() - t)
                worst = max(worst, float(np.abs(got - reference).max()))
            worst = max(worst, float(np.abs(by_index - reference).max()))
            if eager:
                distance = float(np.abs(by_index - eager[len(rows["rank"]) - 1]).max())
                report["compiled_vs_eager_max_abs"] = max(report.get("compiled_vs_eager_max_abs", 0.0), distance)
    if args.profile:
        report["profile"] = profile_launch(launch, engine.encode([queries[0]] * len(documents[0]), documents[0]), sync)
    report["cold_ms"] = {k: 1e3 * statistics.median(v) for k, v in rows.items()}
    report["cold_ms"].update({f"pipelined {k}": 1e3 * statistics.median(v) for k, v in pipelined.items()})
    report["cold_max_abs_diff"] = worst

    # Throughput: one score_pairs call over every pair, per chunk size, and padded.
    pq = [q for q, d in zip(work["throughput"]["queries"], work["throughput"]["documents"]) for _ in d]
    pd = [x for d in work["throughput"]["documents"] for x in d]
    encoded = engine.encode(pq, pd)
    tokens = encoded.num_real_tokens
    config = json.loads((model / "config.json").read_text())
    flops = bench_gpu.useful_flops(config, [len(s) for s in encoded.input_ids])
    peak = 989e12
    sweep: list[dict[str, Any]] = []
    reference_scores: np.ndarray | None = None
    variants: list[tuple[str, int, Any]] = [(f"packed {n}", int(n), None) for n in args.chunk_tokens.split(",")]
    if not args.compile:
        padded = MxbaiRerankV2(str(model), device=str(device), backend="torch", compile=False)
        variants.append(("padded torch (default budget)", padded.engine.max_batch_tokens, padded))

    def measure(label: str, budget: int, call: Any) -> None:
        """Best of two timed ``call()``s (scores in input order) as a sweep row; the first row's
        scores are the reference the others are checked against."""
        nonlocal reference_scores
        times = []
        for _ in range(2):
            sync()
            t = time.perf_counter()
            got = call()
            sync()
            times.append(time.perf_counter() - t)
        if reference_scores is None:
            reference_scores = got
        seconds = min(times)
        sweep.append({"variant": label, "max_batch_tokens": budget, "seconds": seconds,
                      "pairs_per_s": len(pd) / seconds, "tflops": flops / seconds / 1e12, "mfu": flops / seconds / peak,
                      "max_abs_diff": float(np.abs(got - reference_scores).max()),
                      "peak_gb": torch.cuda.max_memory_allocated() / 2**30 if cuda else None})  # fmt: skip

    for label, budget, other in variants:
        target = other.engine if other is not None else engine
        target.score(encoded, max_batch_tokens=budget)  # warm-up at this size
        measure(label, budget, lambda t=target, b=budget: t.score(encoded, max_batch_tokens=b))
    # The same pairs from text: score_pairs tokenizes too, in slices overlapped with the device.
    measure("score_pairs from text (streamed)", engine.max_batch_tokens, lambda: reranker.score_pairs(pq, pd))
    report["throughput"] = {"pairs": len(pd), "tokens": tokens, "useful_tflop": flops / 1e12, "sweep": sweep}

    lines = [f"{report.get('gpu', device)} {report['dtype']} kernel={report['kernel']} packs={report['packs']}", "",
             "| cold top-100 (median) | ms |", "|---|---:|"]  # fmt: skip
    lines += [f"| {k} | {v:.1f} |" for k, v in report["cold_ms"].items()]
    lines += ["", f"throughput: {len(pd)} pairs, {tokens} tokens, {flops / 1e12:.1f} useful TFLOP", "",
              "| variant | s | pairs/s | TFLOP/s | MFU | max abs diff |", "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    lines += [f"| {r['variant']} | {r['seconds']:.3f} | {r['pairs_per_s']:.0f} | {r['tflops']:.1f} "
              f"| {100 * r['mfu']:.1f}% | {r['max_abs_diff']:.2g} |" for r in sweep]  # fmt: skip
    if "profile" in report:
        prof = report["profile"]
        lines += ["", f"profile of one cold query: {prof['device_ms']:.1f} ms of kernels, {prof['kernels']} launches",
                  "", "| kernel kind | ms | share |", "|---|---:|---:|"]  # fmt: skip
        lines += [f"| {k} | {v:.2f} | {100 * v / prof['device_ms']:.0f}% |" for k, v in prof["by_kind_ms"].items()]
        lines += ["", "| top kernels | calls | ms |", "|---|---:|---:|"]
        lines += [f"| {r['name'][:90]} | {r['calls']} | {r['ms']:.2f} |" for r in prof["top_kernels"]]
        lines += ["", "| top host ops (self) | calls | ms |", "|---|---:|---:|"]
        lines += [f"| {r['name'][:90]} | {r['calls']} | {r['ms']:.2f} |" for r in prof["top_host"]]
    report["table"] = "\n".join(lines)
    out = Path(args.output or HERE / "results" / f"gpu_breakdown_{device.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(report["table"])
    for key in ("load_s", "compiled_load_s", "second_shape_s", "compiled_vs_eager_max_abs"):
        if key in report:
            print(f"{key}: {report[key]:.4g}")
    print(f"cold: rank() vs packed launch max abs diff {worst:.2g}\nwritten to {out}")


def _kind(kernel: str) -> str:
    """A CUDA kernel's kind, from its name (cuBLAS/CUTLASS GEMMs, flash attention, inductor's
    Triton kernels, the rest)."""
    name = kernel.lower()
    if name.startswith("triton"):  # first: inductor names kernels after the ops they feed
        return "fused (triton)"
    if "flash" in name or "fmha" in name or "attention" in name:  # before GEMMs: flash kernels name cutlass types
        return "attention"
    if any(k in name for k in ("gemm", "nvjet", "cutlass", "sm90_xmma", "cublas", "splitk")):
        return "gemm"
    return "other (eager elementwise, copies, reductions)"


def profile_launch(launch: Any, encoded: Any, sync: Any) -> dict[str, Any]:
    """One packed forward of ``encoded`` under torch.profiler: kernel time by kind, top kernels,
    top host ops by self time."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():  # as the engine calls it
        launch(encoded)
    sync()
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        launch(encoded)
        sync()
    events = prof.key_averages()

    def dev_ms(e: Any) -> float:
        return getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0.0)) / 1e3

    kernels = [e for e in events if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA]
    if not kernels:  # older profilers list kernels as events with device time and no host time
        kernels = [e for e in events if dev_ms(e) > 0 and e.self_cpu_time_total == 0]
    by_kind: dict[str, float] = {}
    for e in kernels:
        by_kind[_kind(e.key)] = by_kind.get(_kind(e.key), 0.0) + dev_ms(e)
    top = sorted(kernels, key=dev_ms, reverse=True)[:15]
    host = sorted((e for e in events if e not in kernels), key=lambda e: e.self_cpu_time_total, reverse=True)[:15]
    return {"device_ms": sum(by_kind.values()), "kernels": sum(e.count for e in kernels),
            "by_kind_ms": dict(sorted(by_kind.items(), key=lambda kv: -kv[1])),
            "top_kernels": [{"name": e.key, "calls": e.count, "ms": dev_ms(e)} for e in top],
            "top_host": [{"name": e.key, "calls": e.count, "ms": e.self_cpu_time_total / 1e3}
                         for e in host]}  # fmt: skip


if __name__ == "__main__":
    main()
