"""``mxbai-rerank batch`` as a user meets it: every bad input fails in one line before Ray starts,
``--help`` has examples, and a successful run (in its own process, starting its own Ray) keeps
Ray's console output off stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from click.testing import CliRunner, Result  # noqa: E402

from mxbai_rerank.cli import main  # noqa: E402

ROWS = [
    {"pair_id": i, "query": f"what is topic {i % 3}?", "document": f"Passage {i} about topic {i % 4}. " * (1 + i % 3)}
    for i in range(10)
]


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the command starts (or joins) Ray."""
    assert not ray.is_initialized()

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("Ray was started before the input was checked")

    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


def _one_error_line(result: Result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


def _bad_input(tmp: Path, case: str) -> tuple[Path, list[str], str]:
    """(input, extra args, expected part of the error) for one kind of bad input."""
    if case == "missing file":
        return tmp / "missing.jsonl", [], f"input '{tmp / 'missing.jsonl'}' does not exist"
    if case == "unknown format":
        path = tmp / "pairs.csv"
        path.write_text("query,document\nq,d\n")
        return path, [], "neither JSON lines"
    if case == "row without document":
        path = _jsonl(tmp / "pairs.jsonl", [ROWS[0], {"query": "q"}])
        return path, [], f"{path}:2: no 'document' key"
    if case == "invalid JSON":
        path = tmp / "pairs.jsonl"
        path.write_text('{"query": "q", "document": }\n')
        return path, [], f"{path}:1: invalid JSON"
    if case == "query not a string":
        path = _jsonl(tmp / "pairs.jsonl", [{"query": 7, "document": "d"}])
        return path, [], "'query' must be a string, got a number"
    if case == "empty file":
        path = tmp / "pairs.jsonl"
        path.write_text("\n\n")
        return path, [], "has no rows"
    if case == "score column present":
        path = _jsonl(tmp / "pairs.jsonl", [{**ROWS[0], "rerank": 1.0}])
        return path, ["--score-column", "rerank"], "already has a 'rerank' column"
    if case == "parquet without query":
        path = tmp / "pairs.parquet"
        pq.write_table(pa.table({"document": ["d"]}), path)
        return path, [], "has no 'query' column"
    if case == "jsonl read as parquet":
        return _jsonl(tmp / "pairs.jsonl", ROWS), ["--input-format", "parquet"], "not a readable Parquet file"
    if case == "folder mixing formats":
        folder = tmp / "parts"
        folder.mkdir()
        _jsonl(folder / "a.jsonl", ROWS)
        pq.write_table(pa.Table.from_pylist(ROWS), folder / "b.parquet")
        return folder, [], "mixes JSON lines and Parquet"
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    [
        "missing file",
        "unknown format",
        "row without document",
        "invalid JSON",
        "query not a string",
        "empty file",
        "score column present",
        "parquet without query",
        "jsonl read as parquet",
        "folder mixing formats",
    ],
)
def test_bad_input_is_one_line_before_ray_starts(no_ray, v2_model_dir: Path, tmp_path: Path, case: str) -> None:
    source, extra, expected = _bad_input(tmp_path, case)
    output = tmp_path / "out.parquet"
    args = ["batch", "-m", str(v2_model_dir), "--input", str(source), "--output", str(output), *extra]
    line = _one_error_line(CliRunner().invoke(main, args))
    assert expected in line
    assert not output.exists()


@pytest.mark.parametrize("case", ["exists", "exists as the input", "parent is a file", "model missing", "no config"])
def test_bad_output_or_model_is_one_line_before_ray_starts(no_ray, v2_model_dir: Path, tmp_path: Path, case: str):
    source = _jsonl(tmp_path / "pairs.jsonl", ROWS)
    model, output, extra = str(v2_model_dir), tmp_path / "out.parquet", []
    if case == "exists":
        output.mkdir()
        expected = "already exists; remove it or pass overwrite=True (--overwrite)"
    elif case == "exists as the input":
        output, extra = tmp_path, ["--overwrite"]
        expected = "overwriting it would delete the input"
    elif case == "parent is a file":
        output = source / "out.parquet"
        expected = f"'{source}' is a file, not a folder"
    elif case == "model missing":
        model = str(tmp_path / "no-model")
        expected = f"model directory '{model}' does not exist"
    else:
        (tmp_path / "empty-model").mkdir()
        model = str(tmp_path / "empty-model")
        expected = "has no config.json"
    args = ["batch", "-m", model, "--input", str(source), "--output", str(output), *extra]
    assert expected in _one_error_line(CliRunner().invoke(main, args))
    assert source.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_input_is_one_line_before_ray_starts(no_ray, v2_model_dir: Path, tmp_path: Path) -> None:
    source = _jsonl(tmp_path / "pairs.jsonl", ROWS)
    source.chmod(0)
    args = ["batch", "-m", str(v2_model_dir), "--input", str(source), "--output", str(tmp_path / "o")]
    assert "permission denied" in _one_error_line(CliRunner().invoke(main, args))


def test_more_gpus_than_this_machine_has_is_one_line_before_ray_starts(no_ray, v2_model_dir, tmp_path) -> None:
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    source = _jsonl(tmp_path / "pairs.jsonl", ROWS)
    args = ["batch", "-m", str(v2_model_dir), "--input", str(source), "--output", str(tmp_path / "o")]
    args += ["--num-actors", str(gpus + 1), "--num-gpus-per-actor", "1"]
    assert f"but this machine has {gpus}" in _one_error_line(CliRunner().invoke(main, args))


def test_help_has_examples() -> None:
    result = CliRunner().invoke(main, ["batch", "--help"])
    assert result.exit_code == 0
    examples = result.output.split("Examples:", 1)[-1].replace("\\\n", " ").splitlines()
    commands = [line.strip() for line in examples if line.strip().startswith("mxbai-rerank batch ")]
    assert len(commands) >= 2, result.output
    assert all("--input" in c and "--output" in c for c in commands)
    assert "--verbose" in result.output


def test_successful_run_keeps_ray_output_off_stderr(v2_model_dir: Path, v2_reranker, tmp_path: Path) -> None:
    # Its own process: Ray's start-up lines and the core worker's native log lines only appear
    # when the command starts Ray itself, and the latter bypass sys.stderr.
    source = _jsonl(tmp_path / "pairs.jsonl", ROWS)
    output = tmp_path / "scored.parquet"
    env = {k: v for k, v in os.environ.items() if k not in {"RAY_ADDRESS", "MXBAI_RERANK_DEBUG"}}
    command = ["batch", "-m", str(v2_model_dir), "--input", str(source), "--output", str(output)]
    command += ["--device", "cpu", "--dtype", "float32", "--batch-size", "4"]
    run = subprocess.run(
        [sys.executable, "-c", "from mxbai_rerank.cli import main; main()", *command],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout == f"wrote {len(ROWS)} scored rows to {output}\n"
    lines = run.stderr.strip().splitlines()
    assert len(lines) <= 2, run.stderr
    assert "core_worker" not in run.stderr and "INFO" not in run.stderr and "WARNING" not in run.stderr

    table = pq.read_table(output).sort_by("pair_id")
    assert table["pair_id"].to_pylist() == list(range(len(ROWS)))
    expected = v2_reranker.score_pairs([r["query"] for r in ROWS], [r["document"] for r in ROWS])
    np.testing.assert_allclose(table["score"].to_numpy(), expected, atol=1e-5, rtol=0)
