"""``mxbai-rerank rank``: inputs (text, JSON strings, JSON objects, stdin), formats and errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from mxbai_rerank.cli import main

QUERY = "How do I read a file line by line in Python?"
DOCS = [
    "Use open() in a with statement and iterate over the file object to get one line at a time.",
    "The Eiffel Tower was completed in 1889 for the World's Fair in Paris.",
    "readline() returns the next line of a text file, including the trailing newline.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
]


def invoke(args: list[str], input: str | bytes | None = None) -> Result:
    result = CliRunner().invoke(main, args, input=input)
    # Never a traceback: every outcome is a normal exit.
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    return result


def error_line(result: Result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert "Traceback" not in result.output
    return lines[0]


def model_args(model_dir: Path) -> list[str]:
    return ["rank", "--model", str(model_dir), "--device", "cpu", "--dtype", "float32"]


def test_text_lines_from_stdin_default_to_jsonl(v2_model_dir: Path, v2_reranker) -> None:
    # A blank line is not a document; a line starting with "{" is text with --input-format text.
    lines = [DOCS[0], "", DOCS[1], "{not json, just braces", DOCS[2]]
    documents = [DOCS[0], DOCS[1], "{not json, just braces", DOCS[2]]
    result = invoke([*model_args(v2_model_dir), "-q", QUERY, "--top-k", "3", "--input-format", "text"],
                    input="\n".join(lines) + "\n")  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    expected = v2_reranker.rank(QUERY, documents, top_k=3)
    assert [row["rank"] for row in rows] == [1, 2, 3]
    assert [row["index"] for row in rows] == [r.index for r in expected]
    assert [row["score"] for row in rows] == pytest.approx([r.score for r in expected], abs=1e-4)
    for row in rows:
        assert row["document"] == documents[row["index"]]
        # 1-based line in the input, counting the blank line.
        assert lines[row["line"] - 1] == row["document"]


def test_json_objects_with_rank_fields_as_json(tmp_path: Path, v2_model_dir: Path, v2_reranker) -> None:
    objects = [{"title": f"Doc {i}", "text": text, "meta": {"id": i}} for i, text in enumerate(DOCS)]
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps(obj) + "\n" for obj in objects), encoding="utf-8")
    result = invoke([*model_args(v2_model_dir), "-q", QUERY, "--rank-fields", "title,text", "--format", "json",
                     str(path)])  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    expected = v2_reranker.rank(QUERY, objects, rank_fields=["title", "text"], top_k=10)
    assert len(rows) == len(DOCS)  # top-k 10 > 4 documents
    assert [row["index"] for row in rows] == [r.index for r in expected]
    assert [row["score"] for row in rows] == pytest.approx([r.score for r in expected], abs=1e-4)
    assert [row["document"] for row in rows] == [objects[r.index] for r in expected]
    # Scoring through rank_fields differs from scoring the whole object.
    whole = v2_reranker.rank(QUERY, objects, top_k=10)
    assert [r.score for r in whole] != pytest.approx([r.score for r in expected], abs=1e-4)


def test_json_strings_from_stdin_as_table(v2_model_dir: Path, v2_reranker) -> None:
    stdin = "".join(json.dumps(doc) + "\n" for doc in DOCS)
    result = invoke([*model_args(v2_model_dir), "-q", QUERY, "-k", "2", "--format", "table", "-"], input=stdin)
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["rank", "score", "line", "document"]
    expected = v2_reranker.rank(QUERY, DOCS, top_k=2)
    assert len(rows) == 2
    for rank, (row, want) in enumerate(zip(rows, expected, strict=True), start=1):
        cells = row.split(maxsplit=3)
        assert cells[0] == str(rank)
        assert float(cells[1]) == pytest.approx(want.score, abs=1e-3)
        assert int(cells[2]) == want.index + 1
        # JSON strings are decoded: the document is shown without quotes.
        assert DOCS[want.index].startswith(cells[3].rstrip("…"))


def test_instruction_with_v1_model_is_one_line(tmp_path: Path, v1_model_dir: Path) -> None:
    path = tmp_path / "docs.txt"
    path.write_text("\n".join(DOCS), encoding="utf-8")
    result = invoke([*model_args(v1_model_dir), "-q", QUERY, "--instruction", "Find code", str(path)])
    assert result.exit_code == 1
    assert "instruction" in error_line(result)


@pytest.mark.parametrize(
    ("content", "extra", "code", "expected"),
    [
        ('{"text": "a"}\n{"text": "b"\n', [], 1, "docs.txt:2: invalid JSON"),
        ('"a string"\n\n42\n', [], 1, "docs.txt:3: expected a JSON string or object, got int"),
        ('{"title": "a", "text": "b"}\n{"text": "c"}\n', ["--rank-fields", "title"], 1,
         "docs.txt:2: field 'title' (from --rank-fields) not found"),
        (b"fine\n\xff\xfe broken\n", [], 1, "docs.txt:2: not UTF-8 text"),
        ("\n  \n", [], 1, "no documents"),
        ("a\nb\n", ["--top-k", "0"], 2, "--top-k"),
        ("a\nb\n", ["--rank-fields", "a,,b"], 2, "--rank-fields: empty item"),
        ("a\nb\n", ["--format", "xml"], 2, "--format"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line(
    tmp_path: Path, v2_model_dir: Path, content: str | bytes, extra: list[str], code: int, expected: str
) -> None:
    path = tmp_path / "docs.txt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    result = invoke([*model_args(v2_model_dir), "-q", QUERY, *extra, str(path)])
    assert result.exit_code == code
    assert expected in error_line(result)


def test_missing_file_and_missing_model(tmp_path: Path, v2_model_dir: Path) -> None:
    missing = tmp_path / "nope.txt"
    result = invoke([*model_args(v2_model_dir), "-q", QUERY, str(missing)])
    assert result.exit_code == 1
    assert f"cannot read {missing}" in error_line(result)

    docs = tmp_path / "docs.txt"
    docs.write_text("a\n", encoding="utf-8")
    for bad_model, message in [
        (tmp_path / "no-model", "does not exist"),
        (tmp_path, "no config.json"),
        (docs, "is a file"),
    ]:
        result = invoke([*model_args(Path(bad_model)), "-q", QUERY, str(docs)])
        assert result.exit_code == 1
        assert message in error_line(result)


def test_entry_point_help_and_error_without_traceback(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "mxbai-rerank"
    shown = subprocess.run([str(exe), "rank", "--help"], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0
    assert "Examples:" in shown.stdout and "--rank-fields" in shown.stdout
    failed = subprocess.run(
        [str(exe), "rank", "-m", str(tmp_path / "missing-model"), "-q", "x", "-k", "-3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert failed.returncode == 2
    assert failed.stdout == ""
    assert failed.stderr.count("\n") == 1 and failed.stderr.startswith("Error: ")
    assert "--top-k" in failed.stderr and "Traceback" not in failed.stderr


def test_backend_int8_ranks_with_the_int8_library_scores(tmp_path: Path, v2_model_dir: Path) -> None:
    from mxbai_rerank import load

    path = tmp_path / "docs.txt"
    path.write_text("\n".join(DOCS) + "\n")
    result = invoke([*model_args(v2_model_dir), "-q", QUERY, "--backend", "int8", "--input-format", "text", str(path)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    expected = load(str(v2_model_dir), backend="int8", torch_dtype="float32").rank(QUERY, DOCS)
    assert [row["index"] for row in rows] == [r.index for r in expected]
    assert [row["score"] for row in rows] == pytest.approx([r.score for r in expected], abs=1e-5)
