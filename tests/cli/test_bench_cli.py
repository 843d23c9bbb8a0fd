"""``mxbai-rerank bench``: a smoke run over a tiny grid with --json, and argument errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from mxbai_rerank.cli import main
from mxbai_rerank.evaluation import generate_workload


def invoke(args: list[str]) -> Result:
    result = CliRunner().invoke(main, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    return result


def test_bench_grid_writes_json(tmp_path: Path, v2_model_dir: Path, v2_reranker) -> None:
    out = tmp_path / "bench.json"
    args = ["bench", "-m", str(v2_model_dir), "--device", "cpu", "--dtype", "float32",
            "--max-batch-tokens", "512,4096", "--queries", "3", "--docs-per-query", "4", "--warmup", "0",
            "--seed", "7", "--json", str(out)]  # fmt: skip
    result = invoke(args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    results = report["results"]
    assert [r["max_batch_tokens"] for r in results] == [512, 4096]

    # Token count of the same workload, computed independently through the library.
    workload = generate_workload(3, 4, seed=7)
    pairs = zip(workload.queries, workload.documents, strict=True)
    tokens = sum(v2_reranker.encode_pairs([q] * len(ds), ds).num_real_tokens for q, ds in pairs)
    for r in results:
        assert (r["device"], r["dtype"], r["queries"], r["pairs"]) == ("cpu", "float32", 3, 12)
        assert r["real_tokens"] == tokens
        assert r["documents_per_s"] == pytest.approx(r["pairs"] / r["seconds"])
        assert r["tokens_per_s"] == pytest.approx(r["real_tokens"] / r["seconds"])
        assert 0 < r["latency_ms_p50"] <= r["latency_ms_p95"]
        assert r["latency_ms_mean"] * r["queries"] == pytest.approx(r["seconds"] * 1000)
        assert r["peak_rss_mb"] > 50 and r["max_rss_mb"] >= r["peak_rss_mb"] * 0.9
        assert r["gpu_peak_allocated_mb"] is None
    assert report["workload"]["seed"] == 7 and report["environment"]["torch"]

    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["dtype", "budget", "docs/s", "tokens/s"]
    assert [line.split()[:2] for line in lines[1:]] == [["float32", "512"], ["float32", "4096"]]


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (["--dtype", "float32,fp8"], 2, "--dtype: invalid value"),
        (["--max-batch-tokens", "1024,0"], 2, "--max-batch-tokens: invalid value"),
        (["--queries", "0"], 2, "--queries"),
        (["--documents", "/no/such/docs.txt"], 1, "cannot read /no/such/docs.txt"),
        (["--json", "/no/such/dir/out.json"], 2, "does not exist"),
    ],
)
def test_bench_bad_arguments(tmp_path: Path, extra: list[str], code: int, message: str) -> None:
    result = invoke(["bench", "-m", str(tmp_path / "no-model"), *extra])
    assert result.exit_code == code
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.stderr


def test_bench_help_has_examples() -> None:
    result = invoke(["bench", "--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.stdout and "--docs-per-query" in result.stdout
