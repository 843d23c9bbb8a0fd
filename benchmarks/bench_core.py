"""Upstream mxbai-rerank 0.1.6 versus this package, side by side, in one run.

A Qwen2-0.5B-shaped v2 model (random weights: shape decides speed) ranks 1 query x 32 real
English passages of mixed length (~125 tokens on average, up to ~460) with default settings.
Each implementation runs in its own fresh process (upstream in its own virtualenv, since it
needs transformers < 5), so peak resident memory is measured the same way for both.

    python -m venv .venv-upstream
    .venv-upstream/bin/pip install torch==2.13.0 "transformers<5" mxbai-rerank==0.1.6
    .venv/bin/python benchmarks/bench_core.py            # prints a table, writes results/core_<device>.json

Options: ``--docs 100`` for 1 x 100 documents, ``--long 8192`` for documents of ~8k tokens,
``--shape large`` for the 1.5B shape, ``--skip-upstream`` to measure this package alone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests"))

QUERY = "How do I read and write CSV files and parse command line arguments in Python?"


def build_model(shape: str, cache: Path) -> Path:
    import torch

    from fixture_models import QWEN2_0_5B, QWEN2_1_5B, build_qwen2_reranker

    path = cache / f"qwen2-{shape}-random-bf16"
    if (path / "config.json").exists():
        return path
    dims = {"base": QWEN2_0_5B, "large": QWEN2_1_5B}[shape]
    build_qwen2_reranker(path, dims, random_fast=True)
    # Published checkpoints are bf16 safetensors; store the random one the same way.
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16)
    model.save_pretrained(path, safe_serialization=True)
    config = json.loads((path / "config.json").read_text())
    config["torch_dtype"] = config["dtype"] = "bfloat16"
    (path / "config.json").write_text(json.dumps(config, indent=2))
    return path


def passages(model_dir: Path, docs: int, long_tokens: int) -> list[str]:
    from _common import mixed_length_passages, sentence_pool
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)

    def count(text: str) -> int:
        return len(tok(text, add_special_tokens=False).input_ids)

    if long_tokens:
        pool = " ".join(sentence_pool())
        ids = tok(pool, add_special_tokens=False).input_ids
        return [tok.decode(ids[i * long_tokens : (i + 1) * long_tokens]) for i in range(docs)]
    base = mixed_length_passages(count)
    return [base[i % len(base)] for i in range(docs)]


def run(python: str, model: Path, data: Path, repeats: int, extra: list[str]) -> dict[str, object]:
    cmd = [python, str(HERE / "_bench_worker.py"), "--model", str(model), "--passages", str(data)]
    cmd += ["--repeats", str(repeats), *extra]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tempfile.gettempdir(), check=False)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark worker failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=["base", "large"], default="base")
    parser.add_argument("--docs", type=int, default=32)
    parser.add_argument("--long", type=int, default=0, help="use documents of this many tokens")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--upstream-repeats", type=int, default=1)
    parser.add_argument("--upstream-python", default=str(ROOT / ".venv-upstream" / "bin" / "python"))
    parser.add_argument("--skip-upstream", action="store_true")
    parser.add_argument("--cache", default=str(HERE / ".cache"))
    parser.add_argument("--output", default=None)
    args = parser.parse_args()

    model = build_model(args.shape, Path(args.cache))
    docs = passages(model, args.docs, args.long)
    data = Path(args.cache) / f"passages-{args.docs}-{args.long}.json"
    data.write_text(json.dumps({"query": QUERY, "documents": docs}))

    rows: list[tuple[str, dict[str, object]]] = []
    if not args.skip_upstream:
        if not Path(args.upstream_python).exists():
            raise SystemExit(f"no upstream interpreter at {args.upstream_python}; see this script's docstring")
        rows.append(("upstream 0.1.6 (defaults)", run(args.upstream_python, model, data, args.upstream_repeats, [])))
    rows.append(("mxbai-rerank (defaults)", run(sys.executable, model, data, args.repeats, [])))
    rows.append(
        ("mxbai-rerank (float32)", run(sys.executable, model, data, args.repeats, ["--torch-dtype", "float32"]))
    )

    ref = rows[0][1]
    header = "| implementation | dtype | docs/s | s/query | peak RSS (MB) | speed vs upstream | memory vs upstream |"
    lines = [header, "|---|---|---:|---:|---:|---:|---:|"]
    for name, r in rows:
        speed = float(r["docs_per_s"]) / float(ref["docs_per_s"])
        mem = float(r["peak_rss_mb"]) / float(ref["peak_rss_mb"])
        lines.append(
            f"| {name} | {r['dtype']} | {float(r['docs_per_s']):.2f} | {float(r['seconds_per_query']):.2f} "
            f"| {float(r['peak_rss_mb']):.0f} | {speed:.1f}x | {mem:.2f}x |"
        )
    table = "\n".join(lines)
    from _common import machine

    info = machine()
    lens = f"{args.docs} docs" + (f" of {args.long} tokens" if args.long else " (mixed length, ~125 tokens avg)")
    print(f"\n{args.shape} shape, 1 query x {lens}; machine: {info}\n\n{table}\n")
    device = "cuda" if "gpu" in info else "cpu"
    out = Path(args.output or HERE / "results" / f"core_{device}_{args.shape}_{args.docs}x{args.long or 'mixed'}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"machine": info, "setting": lens, "shape": args.shape, "table": table, "runs": dict(rows)}
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
