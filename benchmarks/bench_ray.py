"""Rows/s of ``mxbai_rerank.ray`` batch reranking with 1 and 2 actors on this machine.

Each run is end to end, as ``mxbai-rerank batch`` does it: read a Parquet folder of pairs,
score them on a fresh actor pool (each actor starts a process and loads the model), write
Parquet. For reference the first ``--baseline-rows`` pairs are also scored in this process
with ``score_pairs`` on one thread (no Ray, model already loaded): the rate one 1-thread
actor reaches once started. Each Ray run includes its pool's start-up (process start,
imports, model load: seconds), so small runs understate the steady rate.

    .venv/bin/python benchmarks/bench_ray.py                          # base shape, 600 rows (minutes)
    .venv/bin/python benchmarks/bench_ray.py --shape tiny --rows 400  # a smoke run in seconds
    .venv/bin/python benchmarks/bench_ray.py --model-dir /models/mxbai-rerank-base-v2

``--shape base`` builds a Qwen2-0.5B-shaped v2 model with random weights stored in bf16 (speed
depends on shape, not weights) with ``_common.benchmark_checkpoint``, the same checkpoint as
bench_core.py; documents are real English passages cut to ``--doc-words`` words. Prints a
Markdown table and writes ``results/ray.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _common  # noqa: E402


def make_pairs(rows: int, queries: int, doc_words: int) -> list[dict[str, Any]]:
    from _common import sentence_pool

    pool = sentence_pool()
    out = []
    for i in range(rows):
        q = i % queries
        # Mixed lengths: consecutive sentences, between half and all of doc_words words.
        n = doc_words // 2 + (i * 31) % (doc_words // 2 + 1)
        start, words = (i * 7919) % len(pool), []
        while len(words) < n:
            words += pool[start % len(pool)].split()
            start += 1
        out.append(
            {
                "pair_id": i,
                "qid": f"q{q}",
                "query": f"How do I use {pool[q % len(pool)].split()[0].lower()} in Python? (topic {q})",
                "document": " ".join(words[:n]),
            }
        )
    return out


def in_process_rows_per_s(model_dir: Path, pairs: list[dict[str, Any]], dtype: str | None) -> tuple[float, float]:
    """(model load seconds, rows/s) of ``score_pairs`` on one thread in this process."""
    import torch

    import mxbai_rerank

    torch.set_num_threads(1)
    start = time.perf_counter()
    reranker = mxbai_rerank.load(str(model_dir), device="cpu", torch_dtype=dtype)
    loaded = time.perf_counter() - start
    start = time.perf_counter()
    reranker.score_pairs([p["query"] for p in pairs], [p["document"] for p in pairs])
    return loaded, len(pairs) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, help="An existing v1/v2 model directory (overrides --shape).")
    parser.add_argument("--shape", choices=["tiny", "base"], default="base", help="Model to build when no --model-dir.")
    parser.add_argument("--rows", type=int, default=600, help="Pairs to score per run.")
    parser.add_argument("--baseline-rows", type=int, default=120, help="Pairs for the in-process reference.")
    parser.add_argument("--queries", type=int, default=0, help="Distinct queries (default: rows / 50).")
    parser.add_argument("--doc-words", type=int, default=96, help="Longest document, in words.")
    parser.add_argument("--actors", default="1,2", help="Comma-separated actor counts to run.")
    parser.add_argument(
        "--num-cpus-per-actor",
        type=float,
        default=None,
        help="Default: min(1, (CPUs - 1) / most actors), leaving a CPU for the read and write tasks.",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="Rows per actor call.")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16 or auto.")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray instance (default: all).")
    parser.add_argument("--cache", type=Path, default=HERE / ".cache")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "ray.json")
    args = parser.parse_args()

    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray

    from mxbai_rerank.ray import rerank_parquet

    model_dir = args.model_dir or _common.benchmark_checkpoint(args.shape, args.cache)
    dtype = None if args.dtype == "auto" else args.dtype
    queries = args.queries or max(1, args.rows // 50)
    pairs = make_pairs(args.rows, queries, args.doc_words)
    actor_counts = [int(a) for a in args.actors.split(",")]
    load_s, baseline = in_process_rows_per_s(model_dir, pairs[: args.baseline_rows], dtype)

    ray.init(num_cpus=args.num_cpus, include_dashboard=False, logging_level=logging.WARNING)
    total_cpus = float(ray.cluster_resources().get("CPU", 1))
    cpus_per_actor = args.num_cpus_per_actor or min(1.0, max(total_cpus - 1, 0.5) / max(actor_counts))
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    runs = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            source = Path(tmp) / "pairs"
            source.mkdir()
            table = pa.Table.from_pylist(pairs)
            files = max(actor_counts) * 4
            step = -(-len(pairs) // files)
            for i in range(files):
                pq.write_table(table.slice(i * step, step), source / f"part-{i:03d}.parquet")
            for actors in actor_counts:
                output = Path(tmp) / f"scored-{actors}"
                start = time.perf_counter()
                rows = rerank_parquet(
                    source,
                    output,
                    str(model_dir),
                    num_actors=actors,
                    num_cpus_per_actor=cpus_per_actor,
                    batch_size=args.batch_size,
                    torch_dtype=dtype,
                )
                wall = time.perf_counter() - start
                if rows != len(pairs):
                    raise SystemExit(f"wrote {rows} rows for {len(pairs)} pairs")
                runs.append({"actors": actors, "wall_s": round(wall, 2), "rows_per_s": round(rows / wall, 1)})
    finally:
        ray.shutdown()

    result = {
        "benchmark": "mxbai_rerank.ray end to end (read Parquet -> score on an actor pool -> write Parquet)",
        "machine": _common.machine(),
        "ray": ray.__version__,
        "model": str(model_dir)
        if args.model_dir
        else f"qwen2-{args.shape} ({'test fixture' if args.shape == 'tiny' else 'random weights, bf16'})",
        "dtype": args.dtype,
        "rows": len(pairs),
        "queries": queries,
        "doc_words_max": args.doc_words,
        "batch_size": args.batch_size,
        "num_cpus_per_actor": cpus_per_actor,
        "torch_threads_per_actor": max(1, int(cpus_per_actor)),
        "in_process_1_thread": {
            "rows": min(len(pairs), args.baseline_rows),
            "model_load_s": round(load_s, 2),
            "rows_per_s": round(baseline, 1),
        },
        "runs": runs,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")

    print(
        f"\n{len(pairs)} pairs, {queries} queries, model {result['model']}, {args.dtype}, {_common.machine()['cpu']}\n"
    )
    print("| setup | wall (s) | rows/s |")
    print("|---|---:|---:|")
    print(f"| in-process score_pairs, 1 thread (no Ray, model loaded) | - | {baseline:.1f} |")
    for run in runs:
        label = (
            f"Ray, {run['actors']} actor(s) x {cpus_per_actor:g} CPU ({max(1, int(cpus_per_actor))} thread), end to end"
        )
        print(f"| {label} | {run['wall_s']:.2f} | {run['rows_per_s']:.1f} |")
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
