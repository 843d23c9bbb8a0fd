"""Upstream mxbai-rerank 0.1.6 versus this package, side by side, in one run.

A Qwen2-0.5B-shaped v2 model (random weights: shape decides speed) ranks 1 query x 32 real
English passages of mixed length (~125 tokens on average, up to ~460) with default settings.
Each implementation runs in its own fresh process (upstream in its own virtualenv, since it
needs transformers < 5), so peak resident memory is measured the same way for both.

    python3 -m venv .venv-upstream
    .venv-upstream/bin/pip install torch==2.13.0 "transformers>=4.56,<5" mxbai-rerank==0.1.6
    .venv/bin/python benchmarks/bench_core.py   # prints a table, writes results/core_<device>_<shape>_<docs>x<len>.json

Extra rows of this package: ``--backends int8,onnx-int8`` (default) adds the ``int8`` backend
(PyTorch, per-token int8 matrix products) and the ``onnx-int8`` backend (ONNX Runtime,
dynamically quantized graph). The ONNX graph is prepared first, in its own process, by
``mxbai-rerank convert --to onnx --quantize int8`` into the cache (time and peak RSS of that
one-time step are recorded as ``prepare``; an existing folder is reused), and the timed process
loads that graph, never the torch model. ``torch-ao-int8`` measures ``torch.ao``'s dynamic int8
quantization (slow; float32 load). A row may name its dtype: ``int8@float32``. ``--backends ''``:
no extra rows.

Quality gate of every extra row against float32 (``--gate Q,D``, default ``10,100``; ``''`` to
skip): Q generated queries x D mixed passages, Kendall's tau of each query's scores >= 0.95 and
identical top-10 sets in >= 90% of the queries, and nDCG@10 on the docstring test collection
(40 queries, top 20 of BM25) within 0.01 of float32. On the 0.5B shape the float32 reference of
the gate scores ~1,800 pairs (about 15 minutes on 2 cores). Random weights give near-tied scores,
so read a failed gate together with the score spread it records.

Options: ``--docs 100`` for 1 x 100 documents, ``--long 8192`` for documents of ~8k tokens,
``--shape large`` for the 1.5B shape, ``--shape tiny --docs 4`` for a smoke run in seconds,
``--model DIR`` for an existing v2 checkpoint (a published one, say) instead of the built
one, ``--skip-upstream`` to measure this package alone (no comparison, no agreement check),
``--skip-defaults`` without the defaults row (under ``ONEDNN_MAX_CPU_ISA=AVX2`` and friends,
which emulate an AVX2-only CPU, the defaults still see the hardware's bf16 and pick it).

Same model for both. The checkpoint comes from :func:`_common.benchmark_checkpoint`, whose
config.json transformers 4.5x and 5.x read the same way (transformers 5 alone would write the
RoPE base only where transformers 4 does not look, so upstream would run a different model).
Each worker also reports the settings its own transformers read (RoPE base from the rotary
embedding it builds, layer types, sliding window, tied embeddings, shape).

Agreement check, before any timing: both implementations score the same ``--check-docs``
pairs (spread over the shorter half of the documents, so upstream's check takes seconds) in
float32, each in a fresh process. The script stops with a non-zero exit and says why when
the settings read differ, or when any score differs by more than ``--tolerance`` (1e-3).
After timing, rows that ran in float32 (upstream's default on CPU, and ``mxbai-rerank
(float32)``) are compared on every document the same way; nothing is written if they differ.

bf16 is not held to 1e-3: bf16 keeps 8 significant bits, so correct code moves scores by about
1e-2 and can swap near-tied documents. The float32 check shows both implementations compute
the same function from the same checkpoint; the bf16 row is the same code at a lower
precision. Its largest difference from this package's float32 scores and whether the top 3
match are recorded (``agreement`` in the result file) for information, not enforced.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _common import CACHE, SHAPES, benchmark_checkpoint  # noqa: E402

QUERY = "How do I read and write CSV files and parse command line arguments in Python?"
UPSTREAM = "upstream 0.1.6 (defaults)"
DEFAULTS = "mxbai-rerank (defaults)"
FLOAT32 = "mxbai-rerank (float32)"
# Extra rows (--backends): engine backends, each optionally run in a given dtype (int8@float32).
EXTRA_BACKENDS = ("int8", "onnx-int8", "torch-ao-int8")
DTYPES = ("", "float32", "bfloat16")


def backend_args(row: str) -> list[str]:
    """Worker arguments of an extra row: ``int8`` -> --backend int8; ``int8@float32`` adds --torch-dtype."""
    backend, _, dtype = row.partition("@")
    return ["--backend", backend] + (["--torch-dtype", dtype] if dtype else [])


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


def run(python: str, model: Path, data: Path, repeats: int, extra: list[str]) -> dict[str, Any]:
    cmd = [python, str(HERE / "_bench_worker.py"), "--model", str(model), "--passages", str(data)]
    cmd += ["--repeats", str(repeats), *extra]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}
    capability = os.environ.get("ATEN_CPU_CAPABILITY")
    if capability and "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        # Inductor's on-disk cache does not key on this cap: code generated for the CPU's own
        # vector width (AVX-512), compiled for AVX2, writes past its vectors and crashes.
        env["TORCHINDUCTOR_CACHE_DIR"] = str(CACHE / f"inductor-{capability}")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tempfile.gettempdir(), check=False)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark worker failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def check_indices(docs: list[str], count: int) -> list[int]:
    """``count`` documents spread evenly over the shorter half (by characters), in input order."""
    by_length = sorted(range(len(docs)), key=lambda i: (len(docs[i]), i))
    pool = by_length[: max(count, (len(docs) + 1) // 2)]
    if count >= len(pool):
        return sorted(pool)
    step = (len(pool) - 1) / max(count - 1, 1)
    return sorted({pool[round(i * step)] for i in range(count)})


def config_differences(a: dict[str, Any], b: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    keys = (set(a) | set(b)) - {"transformers"}
    return {k: (a.get(k), b.get(k)) for k in sorted(keys) if a.get(k) != b.get(k)}


def max_abs_diff(a: list[float], b: list[float]) -> float:
    if len(a) != len(b):
        raise SystemExit(f"score lists differ in length: {len(a)} != {len(b)}")
    return max((abs(x - y) for x, y in zip(a, b, strict=True)), default=0.0)


def fail(what: str, upstream: dict[str, Any], ours: dict[str, Any], details: str) -> None:
    up, me = upstream["effective_config"], ours["effective_config"]
    raise SystemExit(
        f"AGREEMENT CHECK FAILED ({what}): upstream 0.1.6 and mxbai-rerank did not compute the same scores, so "
        f"a speed comparison would be meaningless.\n{details}\n"
        f"Settings read from the checkpoint: upstream (transformers {up['transformers']}) vs "
        f"mxbai-rerank (transformers {me['transformers']}): "
        f"{config_differences(up, me) or 'identical'}.\n"
        "A RoPE base of 10000 on one side means config.json lacks a top-level rope_theta (transformers 5 writes "
        "it only in rope_parameters): run without --model, or fix the file with "
        "tests/fixture_models.make_config_portable."
    )


def agreement_check(
    upstream_python: str, model: Path, data: Path, indices: list[int], tolerance: float
) -> dict[str, Any]:
    """Score the same pairs in float32 under both implementations, before any timing."""
    extra = ["--torch-dtype", "float32", "--check-indices", ",".join(map(str, indices))]
    upstream = run(upstream_python, model, data, 0, extra)
    ours = run(sys.executable, model, data, 0, extra)
    diff = max_abs_diff(upstream["check_scores"], ours["check_scores"])
    differences = config_differences(upstream["effective_config"], ours["effective_config"])
    pairs = "\n".join(
        f"  doc {i}: upstream {u:+.6f}  mxbai-rerank {o:+.6f}  |diff| {abs(u - o):.2e}"
        for i, u, o in zip(indices, upstream["check_scores"], ours["check_scores"], strict=True)
    )
    if differences or not diff <= tolerance:
        fail("float32, before timing", upstream, ours, f"max |diff| {diff:.3g} (tolerance {tolerance:g}):\n{pairs}")
    print(f"agreement check (float32, {len(indices)} pairs {indices}): max |diff| {diff:.2e} <= {tolerance:g}")
    return {
        "before_timing_float32": {
            "pairs": indices,
            "max_abs_diff": diff,
            "tolerance": tolerance,
            "upstream_scores": upstream["check_scores"],
            "mxbai_rerank_scores": ours["check_scores"],
        },
        "effective_config": {"upstream": upstream["effective_config"], "mxbai_rerank": ours["effective_config"]},
    }


def timed_agreement(runs: dict[str, dict[str, Any]], tolerance: float) -> dict[str, Any]:
    """Compare the timed runs' scores on every document; fail if float32 rows disagree."""
    out: dict[str, Any] = {}
    ref = runs[FLOAT32]
    upstream = runs.get(UPSTREAM)
    if upstream is not None and upstream["dtype"] == "float32":
        diff = max_abs_diff(upstream["scores"], ref["scores"])
        out["timed_float32_upstream_vs_mxbai_rerank_max_abs_diff"] = diff
        if not diff <= tolerance:
            worst = max(range(len(ref["scores"])), key=lambda i: abs(upstream["scores"][i] - ref["scores"][i]))
            fail(
                "float32, timed runs, every document",
                upstream,
                ref,
                f"max |diff| {diff:.3g} (tolerance {tolerance:g}) at doc {worst}: "
                f"upstream {upstream['scores'][worst]:+.6f}, mxbai-rerank {ref['scores'][worst]:+.6f}",
            )
    for name, r in runs.items():
        if name != FLOAT32 and r["dtype"] != "float32":
            top = [i for i, _ in r["top3"]]
            out[f"{name} vs {FLOAT32}"] = {
                "dtype": r["dtype"],
                "max_abs_diff": max_abs_diff(r["scores"], ref["scores"]),
                "same_top3": top == [i for i, _ in ref["top3"]],
                "top3": top,
                "float32_top3": [i for i, _ in ref["top3"]],
            }
    return out


def quality_gate(model: Path, data: Path, targets: dict[str, Path], spec: str, cache: Path) -> dict[str, Any]:
    """Each extra backend against float32: per-query Kendall's tau and top-10 sets, nDCG@10.

    The float32 reference (the slow part: ~15 minutes on the 0.5B shape) is kept in ``cache``
    per model, workload and package version, and reused by later runs."""
    import mxbai_rerank
    from mxbai_rerank.convert._agreement import ranking_agreement

    saved = cache / f"gate-reference-{model.name}-{spec.replace(',', 'x')}-{mxbai_rerank.__version__}.json"
    if saved.is_file():
        reference = json.loads(saved.read_text())
        print(f"quality gate: float32 reference reused from {saved}")
    else:
        reference = run(sys.executable, model, data, 0, ["--torch-dtype", "float32", "--gate", spec])
        saved.write_text(json.dumps(reference))
    spread = [max(s) - min(s) for s in reference["gate_scores"]]
    out: dict[str, Any] = {"float32_ndcg@10": reference["ndcg@10"], "float32_score_range": spread}
    for backend, target in targets.items():
        got = run(sys.executable, target, data, 0, [*backend_args(backend), "--gate", spec])
        agreement = ranking_agreement(reference["gate_scores"], got["gate_scores"], top_k=10)
        queries = len(agreement.taus)
        ndcg_diff = abs(got["ndcg@10"] - reference["ndcg@10"])
        passed = agreement.min_tau >= 0.95 and agreement.same_top_k_count >= 0.9 * queries and ndcg_diff <= 0.01
        diffs = [abs(a - b) for r, g in zip(reference["gate_scores"], got["gate_scores"]) for a, b in zip(r, g)]
        out[backend] = {**agreement.to_dict(), "ndcg@10": got["ndcg@10"], "ndcg@10_abs_diff": ndcg_diff,
                        "max_abs_score_diff": max(diffs), "passed": passed}  # fmt: skip
        print(
            f"quality gate {backend}: min tau {agreement.min_tau:.3f}, same top-10 {agreement.same_top_k_count}/"
            f"{queries}, nDCG@10 {got['ndcg@10']:.4f} vs {reference['ndcg@10']:.4f} -> {'PASS' if passed else 'FAIL'}"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=list(SHAPES), default="base", help="tiny: the test fixture, for smoke runs")
    parser.add_argument("--model", default=None, help="an existing v2 checkpoint (default: build one, see --shape)")
    parser.add_argument("--docs", type=int, default=32)
    parser.add_argument("--long", type=int, default=0, help="use documents of this many tokens")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--upstream-repeats", type=int, default=1)
    parser.add_argument("--upstream-python", default=str(ROOT / ".venv-upstream" / "bin" / "python"))
    parser.add_argument("--skip-upstream", action="store_true")
    parser.add_argument(
        "--skip-defaults",
        action="store_true",
        help="no row for this package's defaults (under an instruction-set cap they pick bf16, which the cap emulates)",
    )
    parser.add_argument("--check-docs", type=int, default=4, help="pairs scored in float32 by both before timing")
    parser.add_argument("--tolerance", type=float, default=1e-3, help="largest allowed float32 score difference")
    parser.add_argument("--cache", default=str(CACHE))
    parser.add_argument("--output", default=None)
    parser.add_argument(
        "--backends",
        default="int8,onnx-int8",
        help="extra rows, comma-separated: int8, onnx-int8, torch-ao-int8, each optionally @float32 or @bfloat16",
    )
    parser.add_argument("--gate", default="10,100", help="quality gate of the extra rows: Q,D ('' to skip)")
    args = parser.parse_args()
    extra = [b for b in args.backends.split(",") if b]
    if any(b.partition("@")[0] not in EXTRA_BACKENDS or b.partition("@")[2] not in DTYPES for b in extra):
        parser.error(f"--backends: choose from {', '.join(EXTRA_BACKENDS)}, @dtype optional: {args.backends!r}")
    if args.check_docs < 1:
        parser.error("--check-docs must be at least 1: the comparison is only meaningful on the same model")

    model = Path(args.model) if args.model else benchmark_checkpoint(args.shape, Path(args.cache))
    label = model.name if args.model else args.shape
    docs = passages(model, args.docs, args.long)
    Path(args.cache).mkdir(parents=True, exist_ok=True)
    data = Path(args.cache) / f"passages-{model.name}-{args.docs}-{args.long}.json"
    data.write_text(json.dumps({"query": QUERY, "documents": docs}))

    rows: list[tuple[str, dict[str, Any]]] = []
    agreement: dict[str, Any] = {}
    if not args.skip_upstream:
        if not Path(args.upstream_python).exists():
            raise SystemExit(f"no upstream interpreter at {args.upstream_python}; see this script's docstring")
        indices = check_indices(docs, args.check_docs)
        agreement = agreement_check(args.upstream_python, model, data, indices, args.tolerance)
        rows.append((UPSTREAM, run(args.upstream_python, model, data, args.upstream_repeats, [])))
    if not args.skip_defaults:
        rows.append((DEFAULTS, run(sys.executable, model, data, args.repeats, [])))
    rows.append((FLOAT32, run(sys.executable, model, data, args.repeats, ["--torch-dtype", "float32"])))
    targets: dict[str, Path] = {}
    prepare: dict[str, Any] = {}
    for backend in extra:
        target = model
        if backend == "onnx-int8":
            target = Path(args.cache) / f"{model.name}-onnx-int8"
            if not (target / "mxbai_rerank_onnx.json").is_file():
                prepare = run(sys.executable, model, data, 0, ["--prepare-onnx", str(target)])
                print(f"prepared {target} in {prepare['seconds']:.0f} s, peak RSS {prepare['peak_rss_mb']:.0f} MB")
            else:
                prepare = {"reused": str(target)}
        targets[backend] = target
        timed = run(sys.executable, target, data, args.repeats, backend_args(backend))
        rows.append((f"mxbai-rerank ({backend})", timed))
    agreement |= timed_agreement(dict(rows), args.tolerance)
    gate = quality_gate(model, data, targets, args.gate, Path(args.cache)) if args.gate and extra else {}

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
    print(f"\n{label} shape, 1 query x {lens}; machine: {info}\n\n{table}\n")
    device = "cuda" if "gpu" in info else "cpu"
    out = Path(args.output or HERE / "results" / f"core_{device}_{label}_{args.docs}x{args.long or 'mixed'}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "machine": info,
        "setting": lens,
        "shape": label,
        "model": str(model),
        "table": table,
        "agreement": agreement,
        "int8_prepare": prepare,
        "quality_gate": gate,
        "runs": dict(rows),
    }
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
