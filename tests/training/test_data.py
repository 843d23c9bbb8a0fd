"""Training data: both JSON-lines formats, JSON-object documents, BEIR folders, bad lines, mining."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from synthetic import make_groups, write_beir, write_jsonl

from mxbai_rerank.training import DatasetError, TrainingData, load_training_data, mine_hard_negatives
from mxbai_rerank.training._data import _rescore, eval_set_from_data


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_group_format_objects_and_instructions(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.jsonl", [
        json.dumps({"query": "q1", "positive": "p1", "negatives": ["n1", "n2"]}),
        json.dumps({"query": "q1", "positives": ["p2"], "negative": "n1"}),  # same query: one group
        json.dumps({"query": "q2", "instruction": "strict", "positive": {"title": "T", "body": "B"}, "negative": "x"}),
    ])  # fmt: skip
    data = load_training_data(path, rank_fields=["body"])
    assert [g.query for g in data.groups] == ["q1", "q2"]
    first, second = data.groups
    assert first.documents == ["p1", "n1", "n2", "p2"] and first.labels == [1.0, 0.0, 0.0, 1.0]
    assert second.instruction == "strict" and second.documents == ["B", "x"]  # rank_fields as in `rank`
    assert load_training_data(path).groups[1].documents[0] == "title: T\nbody: B"  # no rank_fields: every field
    assert sorted(data.corpus) == sorted({"p1", "n1", "n2", "p2", "B", "x"})


def test_pointwise_format_with_graded_labels_and_skipped_queries(tmp_path: Path, caplog) -> None:
    path = write_lines(tmp_path / "p.jsonl", [
        json.dumps({"query": "a", "document": "d1", "label": 2}),
        json.dumps({"query": "a", "document": "d2", "label": 0}),
        json.dumps({"query": "a", "document": "d3", "label": 1}),
        "",
        json.dumps({"query": "no positive", "document": "d4", "label": 0}),
        json.dumps({"query": "no positive either", "negatives": ["d5"]}),
    ])  # fmt: skip
    data = load_training_data(path)
    assert len(data.groups) == 1 and data.groups[0].labels == [2.0, 0.0, 1.0]
    assert data.skipped == 2 and "skipped 2 queries without any positive" in caplog.text
    assert data.describe()["skipped_queries_without_positive"] == 2


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"query": "q", "positive": "p"', "not a valid JSON line"),
        ('["query"]', "expected a JSON object"),
        ('{"positive": "p"}', "missing 'query'"),
        ('{"query": "q", "document": "d", "label": -1}', "'label' must be a number >= 0"),
        ('{"query": "q", "positive": 3}', "positives must be a string or a JSON object"),
        ('{"query": "q", "text": "d"}', "expected 'positive'/'positives'"),
        ('{"query": "q", "positive": {"a": 1}}', "rank_fields path 'body' not found"),
    ],
)
def test_a_bad_line_names_the_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = write_lines(tmp_path / "bad.jsonl", [json.dumps({"query": "ok", "positive": "p"}), line])
    with pytest.raises(DatasetError, match=message) as info:
        load_training_data(path, rank_fields=["body"])
    assert f"{path}:2:" in str(info.value)


def test_empty_data_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no training examples"):
        load_training_data(write_lines(tmp_path / "empty.jsonl", [""]))
    with pytest.raises(DatasetError, match="2 queries without any positive"):
        load_training_data([{"query": "a", "negative": "x"}, {"query": "b", "document": "y", "label": 0}])
    with pytest.raises(DatasetError, match="does not exist"):
        load_training_data(tmp_path / "missing.jsonl")


def test_beir_folder(tmp_path: Path) -> None:
    records = make_groups(5, 3, seed=3)
    data = load_training_data(write_beir(records, tmp_path / "beir"), split="train")
    assert len(data.groups) == 5 and len(data.corpus) == 20
    assert all(len(g.positives) == 1 and not g.negatives for g in data.groups)  # qrels list the positives only
    assert data.groups[0].documents == [records[0]["positive"]]


def test_bm25_mining_tops_up_with_documents_of_other_queries() -> None:
    records = make_groups(12, 3, seed=4)
    data = load_training_data([{"query": r["query"], "positive": r["positive"]} for r in records] + [
        {"query": "extra", "positive": "x", "negatives": [r["negatives"][0] for r in records[:1]]}
    ])  # fmt: skip
    assert data.corpus  # every document of the file
    mined = mine_hard_negatives(data, 3, top_k=10)
    for before, after in zip(data.groups, mined.groups):
        assert len(after.negatives) == 3 and after.mined == 3 - len(before.negatives)
        assert after.documents[: len(before.documents)] == before.documents
        new = after.documents[len(before.documents) :]
        assert not set(new) & set(before.documents) and len(set(new)) == len(new)
    assert isinstance(mined, TrainingData) and mined is not data and data.groups[0].mined == 0


def test_model_rescoring_skips_likely_false_negatives(v2_reranker) -> None:
    records = make_groups(6, 3, seed=5)
    group = load_training_data([{"query": records[0]["query"], "positive": records[0]["positive"]}]).groups[0]
    candidates = [d for r in records for d in [r["positive"], *r["negatives"]]][1:]
    margin = 0.3
    kept, dropped = _rescore(v2_reranker, group, candidates, margin)
    threshold = v2_reranker.score_pairs([group.query], [group.documents[0]])[0] - margin
    scores = dict(zip(candidates, v2_reranker.score_pairs([group.query] * len(candidates), candidates)))
    assert kept == sorted((c for c in candidates if scores[c] < threshold), key=lambda c: -scores[c])
    assert dropped == sum(scores[c] >= threshold for c in candidates) > 0


def test_eval_set_from_groups() -> None:
    data = load_training_data(make_groups(4, 3, seed=6))
    evals = eval_set_from_data(data)
    assert len(evals.dataset.queries) == 4 and all(len(c) == 4 for c in evals.candidates.values())
    for qid, judged in evals.dataset.qrels.items():
        assert sorted(judged.values()) == [0, 0, 0, 1]
        assert {d for d, _ in evals.candidates[qid]} == set(judged)


def test_jsonl_round_trip(tmp_path: Path) -> None:
    data = load_training_data(write_jsonl(make_groups(3, 2, seed=7), tmp_path / "x.jsonl"))
    data.save(tmp_path / "saved.json")
    again = TrainingData.load(tmp_path / "saved.json")
    assert [g.to_dict() for g in again.groups] == [g.to_dict() for g in data.groups]
