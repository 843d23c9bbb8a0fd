"""``mxbai-rerank train``: a short run with BM25-mined negatives and evaluation, its output ranked
by ``mxbai-rerank rank``, help text, and one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result
from synthetic import make_groups, write_jsonl

from mxbai_rerank.cli import main


def invoke(args: list[str]) -> Result:
    result = CliRunner().invoke(main, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    return result


def test_help_has_examples_and_every_option_explained() -> None:
    result = invoke(["train", "--help"])
    assert result.exit_code == 0 and "Examples:" in result.stdout and "mxbai-rerank train " in result.stdout
    command = main.get_command(click.Context(main), "train")
    assert command is not None
    short = [p.opts[0] for p in command.params if isinstance(p, click.Option) and len((p.help or "").strip()) < 15]
    assert short == []


def test_train_then_rank(v2_start_dir: Path, tmp_path: Path) -> None:
    # One negative per query: BM25 mines the other two from the file's documents.
    records = [{**r, "negatives": r["negatives"][:1]} for r in make_groups(24, 3, seed=21)]
    data = write_jsonl(records, tmp_path / "train.jsonl")
    held_out = write_jsonl(make_groups(8, 5, seed=22), tmp_path / "eval.jsonl")
    out = tmp_path / "my-reranker"
    result = invoke([
        "train", "-m", str(v2_start_dir), "--device", "cpu", "--data", str(data), "--eval", str(held_out),
        "--stages", "contrastive,pointwise", "--max-steps", "4", "--lr", "3e-3", "--lora-rank", "8",
        "--num-negatives", "3", "--output", str(out),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "24 queries" in result.stdout and "48 mined negatives" in result.stdout
    assert "after contrastive" in result.stdout and "after pointwise" in result.stdout and "nDCG@10" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["mined_negatives"] == 48 and list(metrics["train_loss"]) == ["contrastive", "pointwise"]
    docs = tmp_path / "docs.txt"
    docs.write_text("the walrus of the walrus and walrus\nthe of and a to in\n", encoding="utf-8")
    ranked = invoke(["rank", "--model", str(out), "--device", "cpu", "-q", "walrus the of", str(docs)])
    assert ranked.exit_code == 0, ranked.output
    assert "walrus" in ranked.stdout


@pytest.mark.parametrize(
    ("extra", "message", "code"),
    [
        (["--stages", "grpo,dance"], "unknown stage(s) 'dance'", 2),
        (["--save-adapter", "--full"], "--save-adapter needs --lora", 2),
        (["--data", "BAD"], ":2: not a valid JSON line", 1),
    ],
)
def test_errors_are_one_line(v2_start_dir: Path, tmp_path: Path, extra: list[str], message: str, code: int) -> None:
    good = write_jsonl(make_groups(2, 1, seed=23), tmp_path / "good.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "q", "positive": "p"}\n{oops\n', encoding="utf-8")
    args = ["train", "-m", str(v2_start_dir), "--device", "cpu", "--data", str(good), "-o", str(tmp_path / "o")]
    args += [str(bad) if a == "BAD" else a for a in extra]
    result = invoke(args)
    assert result.exit_code == code, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.stderr
    assert not (tmp_path / "o").exists()


def test_a_v1_model_refuses_grpo(v1_model_dir: Path, tmp_path: Path) -> None:
    data = write_jsonl(make_groups(2, 1, seed=24), tmp_path / "t.jsonl")
    result = invoke(
        ["train", "-m", str(v1_model_dir), "--data", str(data), "-o", str(tmp_path / "o"), "--stages", "grpo"]
    )
    assert result.exit_code == 1 and "pointwise and contrastive stages only" in result.stderr
