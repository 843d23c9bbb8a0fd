"""``mxbai-rerank convert``: one clear error line and nothing written for bad input; atomic writes."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from mxbai_rerank.cli import main


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["convert", *args])
    return result.exit_code, result.stdout, result.stderr


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_seq_cls_prints_the_vllm_line(v2_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "seq-cls"
    code, stdout, stderr = _run("-m", str(v2_model_dir), "--to", "seq-cls", "--output", str(out))
    assert code == 0, stderr
    line = stdout.strip()
    assert line.startswith(f"vllm serve {out} --runner pooling --chat-template {out / 'chat_template.jinja'}")
    assert '"use_activation": false' in line
    assert (out / "config.json").is_file() and (out / "chat_template.jinja").is_file()
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--to", "seq-cls"], 1, "mxbai-v1 model; --to seq-cls converts v2"),
        (["--to", "tflite"], 2, "'tflite' is not one of"),
        (["--to", "seq-cls", "--quantize", "int8"], 2, "--quantize applies to --to onnx"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    v1_model_dir: Path, tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    out = tmp_path / "out"
    exit_code, _, stderr = _run("-m", str(v1_model_dir), "--output", str(out), *args)
    assert exit_code == code
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], stderr
    assert not out.exists() and _leftovers(tmp_path) == []


def test_existing_output_needs_overwrite(v2_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, stderr = _run("-m", str(v2_model_dir), "--to", "seq-cls", "--output", str(out))
    assert code == 1 and stderr.count("\n") == 1 and "--overwrite" in stderr
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    code, _, stderr = _run("-m", str(v2_model_dir), "--to", "seq-cls", "--output", str(out), "--overwrite")
    assert code == 0, stderr
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()
    assert _leftovers(tmp_path) == []
