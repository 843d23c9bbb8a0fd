"""GPU table: cold and warm top-100 latency, throughput with MFU, long documents, score agreement.

Each measurement runs in a fresh process (``--worker``), so "cold" really is cold and peak GPU
memory is per run. Workloads (real English passages from standard-library docstrings):

* ``cold``: 12 queries, each with 100 new passages (new batch shapes every query, as in
  serving); every ``rank()`` timed once end to end, tokenization included; median s/query;
* ``latency`` (warm): 5 queries x 100 passages, repeated; median s/query;
* ``throughput``: 28 x 100 pairs in one ``score_pairs`` call; docs/s, useful TFLOP/s and MFU:
  the backbone's FLOPs over each pair's real tokens (no padding, no LM head) against
  ``--peak-tflops`` (989: H100/H200 dense bf16);
* ``long``: 1 query x 32 passages of 7,900 tokens; time and peak GPU memory;
* agreement: raw scores of the latency work, this package in bf16 vs float32, ``--backend``
  vs the padded ``torch`` backend (float32), and vs upstream where ``--upstream-python`` is given.

Rows: this package with its default backend (``packed`` on CUDA with a varlen kernel), each
``--backends`` entry, and upstream 0.1.6 side by side (its own interpreter: it needs
transformers < 5; ``--upstream-path`` is put on its PYTHONPATH, e.g. the GPU kit's /tmp/up).

    .venv/bin/python benchmarks/bench_gpu.py                     # base shape, on the GPU
    .venv/bin/python benchmarks/bench_gpu.py --shape large --upstream-python .venv-upstream/bin/python
    .venv/bin/python benchmarks/bench_gpu.py --backends torch,packed+eager   # + padded and uncompiled rows
    .venv/bin/python benchmarks/bench_gpu.py --shape tiny        # CPU smoke run: a few docs, seconds

On a GPU machine without the dev virtualenv: ``PYTHONPATH=src python3 benchmarks/bench_gpu.py
--model DIR`` with a checkpoint built elsewhere (the GPU kit's /tmp/models/base), or
``--tokenizer DIR`` to build the random-weight checkpoint here with those tokenizer files.
Writes ``results/gpu_<device>_<shape>.json`` (``--output``) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
QUERIES = (
    "How do I parse command line arguments and show a help message?",
    "How can I read and write CSV files?",
    "What is the best way to run a function in a background thread?",
    "How do I compress a folder into a zip archive?",
    "How do I compute a cryptographic hash of a file?",
    "How do I schedule coroutines concurrently with asyncio?",
    "How do I serialize an object to JSON?",
    "How do I match a pattern with a regular expression?",
)
# Full run and smoke run (--shape tiny) sizes.
SIZES = {
    "full": {"cold_queries": 12, "docs": 100, "latency_queries": 5, "throughput_queries": 28, "long_docs": 32,
             "long_tokens": 7900, "repeats": 3},
    "smoke": {"cold_queries": 2, "docs": 4, "latency_queries": 2, "throughput_queries": 2, "long_docs": 2,
              "long_tokens": 600, "repeats": 1},
}  # fmt: skip


# -- worker: one measurement in a fresh process, under either implementation ------------------


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs under this package or upstream 0.1.6: imports only the stdlib, torch and mxbai_rerank."""
    import torch

    device = spec["device"]
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    import mxbai_rerank
    from mxbai_rerank import MxbaiRerankV2

    work = json.loads(Path(spec["work"]).read_text())
    queries, documents = work["queries"], work["documents"]
    kwargs: dict[str, Any] = {"device": device}
    if spec.get("dtype"):
        kwargs["torch_dtype"] = getattr(torch, spec["dtype"])
    if spec.get("backend"):
        # "packed+compile": compile=True (its load_s includes compiling); "packed+eager": compile=False
        # (the default compiles where calls run packed on CUDA).
        backend, _, option = spec["backend"].partition("+")
        kwargs["backend"] = backend
        if option in ("compile", "eager"):
            kwargs["compile"] = option == "compile"
        elif option:
            raise ValueError(f"unknown backend option {option!r} in {spec['backend']!r}; known: compile, eager")
    out: dict[str, Any] = {"version": getattr(mxbai_rerank, "__version__", "0.1.6")}
    t0 = time.perf_counter()
    reranker = MxbaiRerankV2(spec["model"], **kwargs)
    out["load_s"] = time.perf_counter() - t0
    engine = getattr(reranker, "engine", None)
    out["backend"] = engine.backend.name if engine is not None else "upstream"
    out["dtype"] = str(next(reranker.model.parameters()).dtype).removeprefix("torch.")
    out["attention"] = getattr(reranker.model.config, "_attn_implementation", None)
    if engine is not None and hasattr(engine.backend, "packs"):
        out["packs"] = bool(engine.backend.packs(engine))
    reranker.rank(queries[0], documents[0][:4])  # warm-up: allocator, kernels of one small shape
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    def rank_all() -> list[list[float]]:
        scores = []
        for q, docs in zip(queries, documents):
            results = reranker.rank(q, docs, top_k=len(docs), sort=False)
            scores.append([float(r.score) for r in sorted(results, key=lambda r: r.index)])
        return scores

    mode = spec["mode"]
    times: list[float] = []
    if mode == "cold":  # every query brings new shapes: each timed once
        scores = []
        for q, docs in zip(queries, documents):
            sync()
            t = time.perf_counter()
            results = reranker.rank(q, docs, top_k=len(docs), sort=False)
            sync()
            times.append(time.perf_counter() - t)
            scores.append([float(r.score) for r in sorted(results, key=lambda r: r.index)])
        per_query = statistics.median(times)
        total = sum(times)
    else:
        for _ in range(max(1, spec["repeats"])):
            sync()
            t = time.perf_counter()
            if mode == "throughput":
                pairs_q = [q for q, docs in zip(queries, documents) for _ in docs]
                pairs_d = [d for docs in documents for d in docs]
                flat = [float(x) for x in reranker.score_pairs(pairs_q, pairs_d)]
                scores, start = [], 0
                for docs in documents:
                    scores.append(flat[start : start + len(docs)])
                    start += len(docs)
            else:
                scores = rank_all()
            sync()
            times.append(time.perf_counter() - t)
        total = statistics.median(times)
        per_query = total / len(queries)
    docs_count = sum(len(d) for d in documents)
    out.update(
        mode=mode,
        times_s=times,
        seconds=total,
        s_per_query=per_query,
        docs_per_s=docs_count / total,
        peak_gpu_gb=torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        scores=scores,
    )
    if engine is not None and spec.get("lengths"):
        encoded = [reranker.encode_pairs([q] * len(docs), docs) for q, docs in zip(queries, documents)]
        out["lengths"] = [len(ids) for e in encoded for ids in e.input_ids]
    return out


# -- parent ------------------------------------------------------------------------------------


def run_worker(python: str, pythonpath: str | None, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    cmd = [python, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1][:300] if proc.stderr.strip() else "worker died",
                "stderr": proc.stderr[-3000:]}  # fmt: skip
    return json.loads(proc.stdout.strip().splitlines()[-1])


def workloads(model: Path, sizes: dict[str, int]) -> dict[str, dict[str, Any]]:
    """Deterministic passages of mixed length (1-3 docstring paragraphs), new ones per cold query."""
    from _common import sentence_pool
    from transformers import AutoTokenizer

    pool = sentence_pool()
    n = sizes["docs"]

    def docs(k: int) -> list[str]:
        out = []
        for i in range(n):
            start = (k * 7919 + i * 104729) % len(pool)
            count = 2 + (i * 7 + k) % 9  # 2-10 sentences: ~40-300 tokens
            out.append(" ".join(pool[(start + j) % len(pool)] for j in range(count)))
        return out

    cold_q = [f"{QUERIES[k % len(QUERIES)]} ({k})" for k in range(sizes["cold_queries"])]
    lat_q = [QUERIES[k % len(QUERIES)] for k in range(sizes["latency_queries"])]
    thr_q = [QUERIES[k % len(QUERIES)] for k in range(sizes["throughput_queries"])]
    tok = AutoTokenizer.from_pretrained(model)
    ids = tok(" ".join(pool), add_special_tokens=False).input_ids
    length = sizes["long_tokens"]
    step = max(1, (len(ids) - length) // max(sizes["long_docs"], 1))
    long_docs = [tok.decode(ids[i * step : i * step + length]) for i in range(sizes["long_docs"])]
    return {
        "cold": {"queries": cold_q, "documents": [docs(100 + k) for k in range(len(cold_q))]},
        "latency": {"queries": lat_q, "documents": [docs(k) for k in range(len(lat_q))]},
        "throughput": {"queries": thr_q, "documents": [docs(k) for k in range(len(thr_q))]},
        "long": {"queries": [QUERIES[0]], "documents": [long_docs]},
    }


def useful_flops(config: dict[str, Any], lengths: list[int]) -> float:
    """Backbone FLOPs over the real tokens of each pair: projections and MLP (2 FLOPs per MAC),
    causal attention scores and values (``2 * n^2 * d`` per layer: half of the full n x n)."""
    d, layers, inter = config["hidden_size"], config["num_hidden_layers"], config["intermediate_size"]
    head_dim = config.get("head_dim") or d // config["num_attention_heads"]
    kv = config["num_key_value_heads"] * head_dim
    per_token = 2 * layers * (2 * d * d + 2 * d * kv + 3 * d * inter)
    return float(sum(per_token * n + 2 * layers * n * n * d for n in lengths))


def compare(a: list[list[float]] | None, b: list[list[float]] | None) -> dict[str, Any] | None:
    """Max and median |diff| of two score lists (per query), and how often the top document agrees."""
    if not a or not b:
        return None
    diffs = [abs(x - y) for qa, qb in zip(a, b) for x, y in zip(qa, qb)]
    top = sum(
        max(range(len(qa)), key=qa.__getitem__) == max(range(len(qb)), key=qb.__getitem__) for qa, qb in zip(a, b)
    )
    return {"max_abs": max(diffs), "median_abs": statistics.median(diffs), "top1_agree": f"{top}/{len(a)}"}


def build_model(args: argparse.Namespace) -> Path:
    if args.model:
        return Path(args.model)
    sys.path.insert(0, str(HERE))
    from _common import CACHE, benchmark_checkpoint

    if not args.tokenizer:
        return benchmark_checkpoint(args.shape, Path(args.cache or CACHE))
    import fixture_models  # on sys.path through _common

    path = Path(args.cache or CACHE) / f"qwen2-{args.shape}-random-bf16-own-tokenizer"
    if not (path / "model.safetensors").exists():
        dims = {
            "tiny": fixture_models.TINY_QWEN2,
            "base": fixture_models.QWEN2_0_5B,
            "large": fixture_models.QWEN2_1_5B,
        }
        fixture_models.build_qwen2_reranker(
            path, dims[args.shape], random_fast=True, dtype="bfloat16", with_tokenizer=False
        )
        for f in Path(args.tokenizer).iterdir():
            shutil.copy(f, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--shape", choices=["tiny", "base", "large"], default="base", help="tiny: smoke run")
    parser.add_argument("--model", default=None, help="an existing v2 checkpoint instead of a built one")
    parser.add_argument("--tokenizer", default=None, help="tokenizer files for the built checkpoint")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--dtype", default="bfloat16", help="dtype of the timed rows (default bfloat16)")
    parser.add_argument("--backend", default="packed", help="backend checked against padded 'torch' (agreement)")
    parser.add_argument("--backends", default=None, help="backends timed beside the default, comma-separated; "
                        "packed+compile adds compile=True, packed+eager compile=False (the default compiles "
                        "packed calls on CUDA); default: torch on CUDA, packed elsewhere")  # fmt: skip
    parser.add_argument("--upstream-python", default=None, help="interpreter with upstream mxbai-rerank 0.1.6")
    parser.add_argument("--upstream-path", default=None, help="PYTHONPATH for upstream (e.g. /tmp/up)")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="peak dense TFLOP/s for MFU")
    parser.add_argument("--workloads", default="cold,latency,throughput,long")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per worker")
    parser.add_argument("--cache", default=None)
    parser.add_argument("--output", default=None)
    for key in SIZES["full"]:
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, default=None)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    import torch

    sys.path.insert(0, str(HERE))
    from _common import machine

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    sizes = dict(SIZES["smoke" if args.shape == "tiny" else "full"])
    for key in sizes:
        if getattr(args, key) is not None:
            sizes[key] = getattr(args, key)
    model = build_model(args)
    config = json.loads((model / "config.json").read_text())
    work_dir = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    paths = {}
    for name, work in workloads(model, sizes).items():
        paths[name] = work_dir / f"{name}.json"
        paths[name].write_text(json.dumps(work))

    ours_path = str(ROOT / "src") + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")
    impls: list[tuple[str, str, str | None, str | None]] = [("mxbai-rerank (default)", sys.executable, ours_path, None)]
    extra = args.backends if args.backends is not None else ("torch" if device.startswith("cuda") else "packed")
    impls += [(f"mxbai-rerank ({b})", sys.executable, ours_path, b) for b in extra.split(",") if b]
    if args.upstream_python:
        impls.append(("upstream 0.1.6", args.upstream_python, args.upstream_path, None))
    report: dict[str, Any] = {"machine": machine(), "model": str(model), "shape": args.shape, "device": device,
                              "sizes": sizes, "peak_tflops": args.peak_tflops, "rows": [], "agreement": {}}  # fmt: skip
    out = Path(args.output or HERE / "results" / f"gpu_{device.split(':')[0]}_{args.shape}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    scores: dict[str, Any] = {}

    def measure(label: str, python: str, path: str | None, spec: dict[str, Any]) -> dict[str, Any]:
        spec = {"model": str(model), "device": device, "repeats": sizes["repeats"], **spec}
        r = run_worker(python, path, spec, args.timeout)
        r.update(row=label, mode=spec["mode"])
        if r.get("lengths"):
            flops = useful_flops(config, r.pop("lengths"))
            r["useful_tflop"] = flops / 1e12
            r["tflops"] = flops / r["seconds"] / 1e12
            r["mfu"] = r["tflops"] / args.peak_tflops
        scores[f"{label}/{spec['mode']}/{spec.get('dtype')}/{spec.get('backend')}"] = r.pop("scores", None)
        shown = {
            k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items() if k not in ("times_s", "stderr")
        }
        print(json.dumps(shown), flush=True)
        report["rows"].append(r)
        out.write_text(json.dumps(report, indent=1))
        return r

    for mode in [w for w in args.workloads.split(",") if w]:
        for label, python, path, backend in impls:
            if mode == "throughput" and label.startswith("upstream"):
                continue  # upstream has no score_pairs over many queries in one call
            spec = {"mode": mode, "work": str(paths[mode]), "dtype": args.dtype, "backend": backend,
                    "lengths": mode in ("cold", "throughput") and not label.startswith("upstream")}  # fmt: skip
            measure(label, python, path, spec)

    # Agreement on the latency work: bf16 vs float32, the chosen backend vs padded, vs upstream.
    agree = report["agreement"]
    checked = args.backend
    base = {"mode": "latency", "work": str(paths["latency"]), "repeats": 1}
    f32 = measure("agreement", sys.executable, ours_path, {**base, "dtype": "float32", "backend": checked})
    f32_padded = measure("agreement", sys.executable, ours_path, {**base, "dtype": "float32", "backend": "torch"})
    low = scores.get(f"mxbai-rerank (default)/latency/{args.dtype}/None")
    if checked:
        low = measure("agreement", sys.executable, ours_path, {**base, "dtype": args.dtype, "backend": checked})
        low = scores[f"agreement/latency/{args.dtype}/{checked}"]
    ref = scores[f"agreement/latency/float32/{checked}"]
    agree[f"{checked or 'default'} float32 vs torch float32"] = compare(ref, scores["agreement/latency/float32/torch"])
    agree[f"{checked or 'default'} {args.dtype} vs float32"] = compare(low, ref)
    padded_low = scores.get(f"mxbai-rerank (torch)/latency/{args.dtype}/torch")
    if checked and padded_low:
        agree[f"{checked} {args.dtype} vs torch {args.dtype}"] = compare(low, padded_low)
    if args.upstream_python:
        up = scores.get(f"upstream 0.1.6/latency/{args.dtype}/None")
        agree[f"{checked or 'default'} vs upstream, {args.dtype}"] = compare(low, up)
        up32 = measure("agreement", args.upstream_python, args.upstream_path, {**base, "dtype": "float32"})
        agree[f"{checked or 'default'} vs upstream, float32"] = compare(
            ref, scores.get("agreement/latency/float32/None")
        )
        report["upstream_float32_load_s"] = up32.get("load_s")
    report["agreement_backends"] = {"checked": f32.get("backend"), "padded": f32_padded.get("backend")}
    out.write_text(json.dumps(report, indent=1))

    lines = ["| row | work | backend | dtype | s/query (median) | docs/s | TFLOP/s | MFU | peak GPU GB |",
             "|---|---|---|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in report["rows"]:
        if r["row"] == "agreement":
            continue
        if "error" in r:
            lines.append(f"| {r['row']} | {r['mode']} | | | error: {r['error']} | | | | |")
            continue
        tf = f"{r['tflops']:.1f}" if "tflops" in r else ""
        mfu = f"{100 * r['mfu']:.1f}%" if "mfu" in r else ""
        mem = f"{r['peak_gpu_gb']:.2f}" if r.get("peak_gpu_gb") is not None else ""
        lines.append(
            f"| {r['row']} | {r['mode']} | {r.get('backend')} | {r.get('dtype')} | {r['s_per_query']:.4f} "
            f"| {r['docs_per_s']:.1f} | {tf} | {mfu} | {mem} |"
        )
    table = "\n".join(lines)
    report["table"] = table
    out.write_text(json.dumps(report, indent=1))
    print(f"\n{args.shape} shape on {device}; {report['machine']}\n\n{table}\n")
    for name, value in agree.items():
        print(f"agreement {name}: {value}")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
