"""Distributed reranking on a local 2-CPU Ray instance: exact scores, every row exactly once,
columns kept, top-k per query, a killed actor, the progress bar, and ``mxbai-rerank batch``
run in-process on that instance (checks before Ray starts and a run that starts its own Ray
are in test_batch_cli.py)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from click.testing import CliRunner  # noqa: E402

from mxbai_rerank.cli import main  # noqa: E402
from mxbai_rerank.ray import (  # noqa: E402
    PairsInputError,
    RerankScorer,
    read_pairs,
    rerank_dataset,
    rerank_parquet,
    top_k_per_group,
)

TOPICS = ["solar power", "french cuisine", "rust ownership", "jazz history", "deep sea fish", "tax law"]
INSTRUCTIONS = {"solar power": "Prefer technical documents.", "jazz history": "Find biographies."}


def _pairs() -> list[dict[str, Any]]:
    rows = []
    for q, topic in enumerate(TOPICS):
        for d in range(12):
            rows.append(
                {
                    "pair_id": len(rows),
                    "qid": f"q{q}",
                    "docid": f"d{q}-{d}",
                    "query": f"what should I know about {topic}?",
                    "document": f"Passage {d} about {TOPICS[(q + d) % len(TOPICS)]}. " + "More details. " * (d % 5),
                    "instruction": INSTRUCTIONS.get(topic),
                    "bm25": d / 4,  # exact in binary: JSON parsing must give it back unchanged
                }
            )
    return rows


PAIRS = _pairs()


@pytest.fixture(scope="module")
def ray_local() -> Iterator[Any]:
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    # A handful of shuffle partitions: the default (200) costs seconds of task overhead here.
    context.default_hash_shuffle_parallelism = 4
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def expected(v2_reranker) -> dict[int, float]:
    """The library's scores for PAIRS, by pair_id."""
    scores: dict[int, float] = {}
    for instruction in {row["instruction"] for row in PAIRS}:
        rows = [row for row in PAIRS if row["instruction"] == instruction]
        values = v2_reranker.score_pairs(
            [r["query"] for r in rows], [r["document"] for r in rows], instruction=instruction
        )
        scores.update({r["pair_id"]: float(v) for r, v in zip(rows, values, strict=True)})
    return scores


def _check_all_rows(table: pa.Table, expected: dict[int, float], score_column: str = "score") -> None:
    ids = table["pair_id"].to_pylist()
    assert sorted(ids) == list(range(len(PAIRS))), "a row was lost or duplicated"
    by_id = {row["pair_id"]: row for row in table.to_pylist()}
    for pair in PAIRS:
        got = by_id[pair["pair_id"]]
        assert {k: got[k] for k in pair} == pair, "an input column changed"
    scores = np.array([by_id[i][score_column] for i in range(len(PAIRS))])
    np.testing.assert_allclose(scores, [expected[i] for i in range(len(PAIRS))], atol=1e-5, rtol=0)


def _collect(ds: Any) -> pa.Table:
    # A block whose instructions are all null types that column as null: promote across blocks.
    return pa.concat_tables(ray.get(ds.to_arrow_refs()), promote_options="default")


def _dies_once(marker: Path) -> type[RerankScorer]:
    """Fault injection: the first actor that reaches its second batch while ``marker`` exists
    removes it and exits without returning, mid-run; its restarted incarnation works normally."""

    class DiesOnceScorer(RerankScorer):
        calls = 0

        def __call__(self, batch: pa.Table) -> pa.Table:
            out = super().__call__(batch)
            self.calls += 1
            if self.calls >= 2:
                try:
                    marker.unlink()
                except FileNotFoundError:
                    return out
                os._exit(1)
            return out

    return DiesOnceScorer


def test_scores_equal_the_library_every_row_once_columns_kept_when_an_actor_dies(
    ray_local, v2_model_dir, expected, tmp_path: Path
) -> None:
    # One pool startup is most of this module's time, so the fault is injected into the main
    # run: the results must be exact even though one actor died mid-run and was restarted.
    # (The CLI test below covers a run without a fault.)
    marker = tmp_path / "kill-one-actor"
    marker.touch()
    ds = ray.data.from_items(PAIRS, override_num_blocks=9)
    scored = rerank_dataset(
        ds,
        str(v2_model_dir),
        num_actors=2,
        num_cpus_per_actor=0.5,
        batch_size=8,
        torch_dtype="float32",
        scorer_cls=_dies_once(marker),
    ).materialize()
    assert not marker.exists(), "the fault was not injected"
    table = _collect(scored)
    assert table.column_names == [*PAIRS[0], "score"]
    assert table.schema.field("score").type == pa.float32()
    _check_all_rows(table, expected)

    top = _collect(top_k_per_group(scored, 3)).to_pylist()
    assert len(top) == 3 * len(TOPICS)
    for query in {p["query"] for p in PAIRS}:
        candidates = sorted((p for p in PAIRS if p["query"] == query), key=lambda p: -expected[p["pair_id"]])
        got = [r for r in top if r["query"] == query]
        assert [r["pair_id"] for r in got] == [p["pair_id"] for p in candidates[:3]], "not the best 3, best first"
        assert all(set(r) == {*PAIRS[0], "score"} for r in got)


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_cli_jsonl_in_parquet_out_verbose(ray_local, v2_model_dir, expected, tmp_path: Path) -> None:
    # --verbose lets Ray's own output through (what is allowed, not what Ray prints, is the
    # command's business); without it the output is checked in test_batch_cli.py.
    source = _write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    output = tmp_path / "scored.parquet"
    args = ["batch", "--model", str(v2_model_dir), "--input", str(source), "--output", str(output)]
    args += ["--num-actors", "1", "--batch-size", "24", "--dtype", "float32", "--device", "cpu", "--raw"]
    context = ray.data.DataContext.get_current()
    settings = (context.enable_progress_bars, context.raise_original_map_exception)
    handlers = logging.getLogger("ray.data").handlers
    filters = [list(h.filters) for h in handlers]
    result = CliRunner().invoke(main, [*args, "--verbose"])
    assert result.exit_code == 0, result.output
    assert f"wrote {len(PAIRS)} scored rows" in result.output
    _check_all_rows(pq.read_table(output), expected)
    # The command leaves the process's Ray settings as it found them.
    assert (context.enable_progress_bars, context.raise_original_map_exception) == settings
    assert [list(h.filters) for h in handlers] == filters

    again = CliRunner().invoke(main, args)
    assert again.exit_code == 1
    assert "already exists" in again.output and "--overwrite" in again.output


def test_rerank_parquet_shows_one_progress_bar_of_rows(ray_local, v2_model_dir, expected, tmp_path, capsys) -> None:
    source = tmp_path / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist(PAIRS), source)
    output = tmp_path / "scored"
    rows = rerank_parquet(source, output, str(v2_model_dir), show_progress=True, batch_size=24, torch_dtype="float32")
    assert rows == len(PAIRS)
    _check_all_rows(pq.read_table(output), expected)
    bars = [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines() if line.startswith("Scoring")]
    assert bars, "no progress bar"
    assert f"{len(PAIRS)}/{len(PAIRS)}" in bars[-1] and "row" in bars[-1], bars[-1]


def test_cli_local_pool_leaves_a_cpu_for_reads_and_writes(ray_local) -> None:
    from mxbai_rerank.cli._batch import _local_cpus_per_actor
    from mxbai_rerank.cli._common import CliError

    assert ray.cluster_resources()["CPU"] == 2
    assert _local_cpus_per_actor(ray, 2, None, 0) == 0.5
    assert _local_cpus_per_actor(ray, 1, None, 0) == 1.0
    with pytest.raises(CliError, match=r"leave no CPU for reading and writing.*--num-cpus-per-actor 0\.5"):
        _local_cpus_per_actor(ray, 2, 1.0, 0)
    with pytest.raises(CliError, match="need 1 GPUs but this machine has 0"):
        _local_cpus_per_actor(ray, 1, None, 1)


def test_read_pairs_formats(ray_local, tmp_path: Path) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    table = pa.Table.from_pylist(PAIRS)
    pq.write_table(table.slice(0, 30), folder / "a.parquet")
    pq.write_table(table.slice(30), folder / "b.parquet")
    assert sorted(r["pair_id"] for r in read_pairs(folder).take_all()) == list(range(len(PAIRS)))
    _write_jsonl(tmp_path / "pairs.jsonl", PAIRS[:5])
    assert read_pairs(tmp_path / "pairs.jsonl").count() == 5

    with pytest.raises(PairsInputError, match="does not exist"):
        read_pairs(tmp_path / "nope.jsonl")
    (folder / "c.jsonl").write_text("{}\n")
    with pytest.raises(PairsInputError, match="mixes"):
        read_pairs(folder)
    (tmp_path / "pairs.csv").write_text("query,document\n")
    with pytest.raises(PairsInputError, match="neither JSON lines"):
        read_pairs(tmp_path / "pairs.csv")
    with pytest.raises(PairsInputError, match="must hold strings"):
        rerank_dataset(ray.data.from_items([{"query": 1, "document": "x"}]), "unused-model")
    with pytest.raises(PairsInputError, match="already has a 'score' column"):
        rerank_dataset(ray.data.from_items([{"query": "q", "document": "x", "score": 1.0}]), "unused-model")
    with pytest.raises(PairsInputError, match="no 'topic' column"):
        rerank_dataset(ray.data.from_items(PAIRS[:2]), "unused-model", top_k_per_query=2, group_by="topic")
