"""Training throughput (pairs/s, tokens/s) and peak memory of ``mxbai_rerank.training``.

The checkpoint is the benchmark shape of ``_common.benchmark_checkpoint`` (``base``: Qwen2-0.5B,
the mxbai-rerank-base-v2 shape, random weights; ``tiny`` for a smoke run). Training data: queries
with one positive and seven negatives from standard-library docstring passages of mixed length
(speed depends on token counts, not on relevance). Each stage runs ``--steps`` optimizer steps
with LoRA (rank 16 on the attention and MLP projections); the first step is a warm-up and is
not timed when there are more. Peak memory: the process's peak RSS on CPU (model included),
``torch.cuda.max_memory_allocated`` per stage on a GPU.

    .venv/bin/python benchmarks/bench_training.py --shape base --device cpu --steps 3
    .venv/bin/python benchmarks/bench_training.py --shape base --device cuda --steps 20
    .venv/bin/python benchmarks/bench_training.py --shape tiny --steps 2          # smoke run

Prints a table and writes ``benchmarks/results/training_<device>_<shape>.json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _common import HERE, benchmark_checkpoint, machine

from mxbai_rerank import load
from mxbai_rerank.evaluation import generate_workload
from mxbai_rerank.training import StepInfo, TrainingConfig, load_training_data
from mxbai_rerank.training._trainer import Trainer

RESULTS = HERE / "results"


def _records(num_queries: int, docs_per_query: int) -> list[dict[str, Any]]:
    work = generate_workload(num_queries, docs_per_query, seed=0)
    return [{"query": q, "positive": docs[0], "negatives": docs[1:]} for q, docs in zip(work.queries, work.documents)]


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    path = benchmark_checkpoint(args.shape)
    bf16 = device == "cuda" if args.bf16 is None else args.bf16
    dtype = torch.bfloat16 if bf16 else torch.float32  # LoRA: frozen base weights in bf16 under autocast
    reranker = load(str(path), device=device, torch_dtype=dtype)
    data = load_training_data(_records(args.queries, 8))
    rows = []
    for stage in args.stages.split(","):
        config = TrainingConfig(
            stages=(stage,), lora=True, max_steps=args.steps, batch_size=args.batch_size, device=device, bf16=bf16,
            max_batch_tokens=args.max_batch_tokens, gradient_checkpointing=args.gradient_checkpointing,
            num_negatives=7, mine="none", warmup_ratio=0.0,
        )  # fmt: skip
        steps: list[StepInfo] = []
        with tempfile.TemporaryDirectory() as work:
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            trainer = Trainer(reranker, data, config, work_dir=Path(work), on_step=steps.append)
            trainer._run_stage(0, stage, 0, None)  # one stage, no evaluation or checkpoint
            trainer.peft_model.unload()  # the next stage starts from the plain model again
        timed = steps[1:] if len(steps) > 1 else steps
        seconds = sum(s.seconds for s in timed)
        peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else _peak_rss_gib()
        rows.append({
            "stage": stage,
            "steps_timed": len(timed),
            "pairs_per_s": sum(s.pairs for s in timed) / seconds,
            "tokens_per_s": sum(s.tokens for s in timed) / seconds,
            "seconds_per_step": seconds / len(timed),
            "pairs_per_step": sum(s.pairs for s in timed) / len(timed),
            "peak_memory_gib": peak,
        })  # fmt: skip
    return {
        "shape": args.shape,
        "device": device,
        "dtype": "bf16 autocast, bf16 base weights" if bf16 else "float32",
        "lora_rank": 16,
        "max_batch_tokens": args.max_batch_tokens,
        "batch_size": args.batch_size,
        "gradient_checkpointing": args.gradient_checkpointing,
        "threads": torch.get_num_threads(),
        "machine": machine(),
        "results": rows,
        "date": time.strftime("%Y-%m-%d"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=("tiny", "base", "large"), default="base")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per stage (the first is not timed)")
    parser.add_argument("--stages", default="contrastive,grpo")
    parser.add_argument("--queries", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=2, help="items (a query, its positive, 7 negatives) per step")
    parser.add_argument("--max-batch-tokens", type=int, default=2048)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    report = run(args)
    print(f"training throughput, {report['shape']} shape, LoRA r16, {report['device']} ({report['dtype']})")
    print(f"{'stage':<13}{'pairs/s':>10}{'tokens/s':>11}{'s/step':>9}{'pairs/step':>12}{'peak GiB':>10}")
    for row in report["results"]:
        print(
            f"{row['stage']:<13}{row['pairs_per_s']:>10.2f}{row['tokens_per_s']:>11.0f}{row['seconds_per_step']:>9.2f}"
            f"{row['pairs_per_step']:>12.1f}{row['peak_memory_gib']:>10.2f}"
        )
    out = args.output or RESULTS / f"training_{report['device']}_{report['shape']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
