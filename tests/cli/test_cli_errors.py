"""One-line errors across the command line: unknown subcommands, serve's options, input detection,
``--rank-fields`` on plain text and ``--family`` (issue 8, items 4 and 12)."""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result

from mxbai_rerank.cli import main

QUERY = "How do I read a file line by line in Python?"
DOCS = [
    "Use open() in a with statement and iterate over the file object to get one line at a time.",
    "The Eiffel Tower was completed in 1889 for the World's Fair in Paris.",
    "readline() returns the next line of a text file, including the trailing newline.",
]


def invoke(args: list[str], **kwargs) -> Result:
    result = CliRunner().invoke(main, args, **kwargs)
    # Never a traceback: every outcome is a normal exit.
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    return result


def error_line(result: Result) -> str:
    """The one ``Error:`` line of a failed command: no usage block, no traceback, nothing on stdout."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), result.stderr
    assert result.stdout == ""
    return lines[0]


def rank_args(model_dir: Path, *extra: str) -> list[str]:
    return ["rank", "--model", str(model_dir), "--device", "cpu", "--dtype", "float32", "-q", QUERY, *extra]


# -- the group --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["frobnicate"], "no such command 'frobnicate'"),
        (["rnak", "-q", "x"], "did you mean 'rank'?"),
        (["--frobnicate"], "--frobnicate"),
    ],
)
def test_unknown_subcommand_or_option_is_one_line(args: list[str], expected: str) -> None:
    result = invoke(args)
    assert result.exit_code == 2
    line = error_line(result)
    assert expected in line and "--help" in line
    assert "Usage:" not in result.output


# -- serve --------------------------------------------------------------------------------------
@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port that is taken: a serve command that got past its checks fails to bind, never hangs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize(
    ("device", "expected"),
    [
        ("cdua", "invalid --device 'cdua'"),
        pytest.param(
            "cuda",
            "CUDA is not available",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA"),
        ),
        ("cuda:99", "cuda:99"),
        ("meta", "--device meta"),
    ],
)
def test_serve_bad_device_is_one_line(v2_model_dir: Path, busy_port: int, device: str, expected: str) -> None:
    result = invoke(["serve", "--model", str(v2_model_dir), "--port", str(busy_port), "--device", device])
    assert result.exit_code == 1
    assert expected in error_line(result)


def test_serve_device_from_the_environment_is_checked_too(v2_model_dir: Path, busy_port: int) -> None:
    result = invoke(
        ["serve", "--model", str(v2_model_dir), "--port", str(busy_port)], env={"MXBAI_RERANK_DEVICE": "cdua"}
    )
    assert result.exit_code == 1
    assert "cdua" in error_line(result)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--port", "99999"], "--port"),
        (["--dtype", "fp8"], "--dtype"),
        (["--api-key", ""], "--api-key must not be empty"),
        (["--family", "mxbai-v9"], "--family"),
    ],
)
def test_serve_bad_option_is_one_line_with_a_pointer_to_help(args: list[str], expected: str) -> None:
    result = invoke(["serve", "--model", "unused", *args])
    assert result.exit_code == 2
    line = error_line(result)
    assert expected in line and "mxbai-rerank serve --help" in line
    assert "Usage:" not in result.output


def test_serve_shares_the_model_loading_errors(tmp_path: Path) -> None:
    not_a_model = tmp_path / "empty"
    not_a_model.mkdir()
    result = invoke(["serve", "--model", str(not_a_model)])
    assert result.exit_code == 1
    assert "no config.json" in error_line(result)


# -- reading documents ----------------------------------------------------------------------------
def test_auto_detected_json_lines_error_suggests_text(tmp_path: Path, v2_model_dir: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("{braces} open this plain-text note\nsecond note\n", encoding="utf-8")
    result = invoke(rank_args(v2_model_dir, str(path)))
    assert result.exit_code == 1
    line = error_line(result)
    assert f"{path}:1: invalid JSON" in line
    assert "read as JSON lines" in line and "--input-format text" in line

    # Asked for JSON lines explicitly: the error is the same, without the detection hint.
    result = invoke(rank_args(v2_model_dir, "--input-format", "jsonl", str(path)))
    assert result.exit_code == 1
    assert "--input-format text" not in error_line(result)

    # A JSON-string first line followed by other JSON values: the hint too.
    path.write_text('"quoted first note"\n42\n', encoding="utf-8")
    result = invoke(rank_args(v2_model_dir, str(path)))
    assert result.exit_code == 1
    line = error_line(result)
    assert "expected a JSON string or object, got int" in line and "--input-format text" in line


def test_bench_documents_take_the_input_format(tmp_path: Path) -> None:
    # Documents are read before the model loads: no model is needed to see the errors.
    path = tmp_path / "notes.txt"
    path.write_text("{braces} open this plain-text note\nsecond note\n", encoding="utf-8")
    base = ["bench", "-m", str(tmp_path / "no-model"), "--documents", str(path)]
    result = invoke(base)
    assert result.exit_code == 1
    assert "--input-format text" in error_line(result)
    # --input-format reaches the reader: forced JSON lines fail on a plain first line.
    path.write_text("plain note\nsecond note\n", encoding="utf-8")
    result = invoke([*base, "--input-format", "jsonl"])
    assert result.exit_code == 1
    line = error_line(result)
    assert f"{path}:1: invalid JSON" in line and "--input-format text" not in line
    result = invoke(["bench", "-m", str(tmp_path / "no-model"), "--input-format", "text"])
    assert result.exit_code == 2
    assert "--documents" in error_line(result)


@pytest.mark.parametrize(
    ("content", "input_format"),
    [("\n".join(DOCS) + "\n", "auto"), ("".join(json.dumps(d) + "\n" for d in DOCS), "auto"), ('{"a": 1}\n', "text")],
    ids=["text", "json-strings", "forced-text"],
)
def test_rank_fields_without_json_objects_is_an_error(
    tmp_path: Path, v2_model_dir: Path, content: str, input_format: str
) -> None:
    path = tmp_path / "docs.txt"
    path.write_text(content, encoding="utf-8")
    result = invoke(rank_args(v2_model_dir, "--rank-fields", "title,text", "--input-format", input_format, str(path)))
    assert result.exit_code == 2
    line = error_line(result)
    assert "--rank-fields title,text" in line and "no JSON objects" in line


# -- --family -----------------------------------------------------------------------------------
def _renamed_copy(model_dir: Path, dest: Path) -> Path:
    """A renamed, re-saved copy: without the family marker, auto-detection does not know it."""
    shutil.copytree(model_dir, dest)
    config = json.loads((dest / "config.json").read_text(encoding="utf-8"))
    del config["mxbai_rerank"]
    (dest / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return dest


def test_family_option_forces_the_family(tmp_path: Path, v2_model_dir: Path, v2_reranker, v1_model_dir: Path) -> None:
    docs = tmp_path / "docs.txt"
    docs.write_text("\n".join(DOCS) + "\n", encoding="utf-8")
    copy = _renamed_copy(v2_model_dir, tmp_path / "renamed")
    result = invoke(rank_args(copy, str(docs)))
    assert result.exit_code == 1
    assert "--family" in error_line(result)  # the refusal says how to force the family

    result = invoke(rank_args(copy, "--family", "mxbai-v2", "--format", "json", str(docs)))
    assert result.exit_code == 0, result.output
    assert result.stderr == ""  # a local directory: nothing to announce (that is for the hub)
    rows = json.loads(result.stdout)
    expected = v2_reranker.rank(QUERY, DOCS)
    assert [row["index"] for row in rows] == [r.index for r in expected]
    assert [row["score"] for row in rows] == pytest.approx([r.score for r in expected], abs=1e-4)

    # The option reaches the loader: a v1 checkpoint forced to v2 cannot load, in one line.
    result = invoke(rank_args(v1_model_dir, "--family", "mxbai-v2", str(docs)))
    assert result.exit_code == 1
    error_line(result)

    result = invoke(rank_args(v2_model_dir, "--family", "v2", str(docs)))
    assert result.exit_code == 2
    line = error_line(result)
    assert "--family" in line and "mxbai-v1" in line and "mxbai-v2" in line
