"""TREC run files, and ranx-computed metrics against the textbook definitions."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from docstring_beir import build_docstring_beir, reference_metrics

from mxbai_rerank.evaluation import RunFileError, compute_metrics, load_beir, read_trec_run, write_trec_run


def test_write_then_read_round_trips(tmp_path: Path) -> None:
    ranking = {"q1": [("d3", 0.9123456789012345), ("d1", -1e-7), ("d2", -3.5)], "q2": [("d9", 12.0)]}
    path = write_trec_run(ranking, tmp_path / "run.trec", tag="my-run")
    lines = path.read_text().splitlines()
    assert lines[0] == "q1 Q0 d3 1 0.9123456789012345 my-run"
    assert [line.split()[3] for line in lines] == ["1", "2", "3", "1"]
    assert read_trec_run(path) == ranking
    with pytest.raises(ValueError, match="one word"):
        write_trec_run(ranking, tmp_path / "x.trec", tag="two words")


def test_read_orders_by_score_and_keeps_file_order_for_ties(tmp_path: Path) -> None:
    path = tmp_path / "run.txt"
    # Rank column deliberately wrong: trec_eval ignores it, so do we.
    path.write_text("q Q0 a 1 1.0 t\nq Q0 b 2 3.0 t\n\nq Q0 c 3 1.0 t\nq\tQ0\td\t9\t2.5\tt\n", encoding="utf-8")
    assert read_trec_run(path) == {"q": [("b", 3.0), ("d", 2.5), ("a", 1.0), ("c", 1.0)]}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("q Q0 a 1 1.0\n", "run.txt:1: expected 6 columns"),
        ("q Q0 a 1 1.0 t\nq Q0 b 2 nan t\n", "run.txt:2: score 'nan' is not finite"),
        ("q Q0 a 1 x t\n", "run.txt:1: score 'x' is not a number"),
        ("q Q0 a 1 1.0 t\nq Q0 a 2 0.5 t\n", "run.txt:2: document 'a' already listed for query 'q' on line 1"),
        ("\n\n", "has no entries"),
    ],
)
def test_bad_run_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "run.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(RunFileError) as info:
        read_trec_run(path)
    assert message in str(info.value)


def test_unreadable_run_file(tmp_path: Path) -> None:
    with pytest.raises(RunFileError, match="cannot read run file"):
        read_trec_run(tmp_path / "missing.trec")
    (tmp_path / "bin.trec").write_bytes(b"q Q0 \xff 1 1.0 t\n")
    with pytest.raises(RunFileError, match="not UTF-8"):
        read_trec_run(tmp_path / "bin.trec")


def test_graded_example_by_hand() -> None:
    qrels = {"q1": {"a": 2, "b": 1, "z": 0}, "q2": {"c": 1}, "q3": {"n": 0}}
    ranking = {"q1": [("x", 5.0), ("b", 4.0), ("a", 3.0)], "q2": [("c", 1.0)], "unjudged": [("a", 1.0)]}
    report = compute_metrics(qrels, ranking)
    idcg = 2 + 1 / 1.5849625007211563
    dcg = 1 / 1.5849625007211563 + 2 / 2.0
    assert report.per_query["q1"] == pytest.approx({"ndcg@10": dcg / idcg, "mrr@10": 0.5, "recall@100": 1.0})
    assert report.per_query["q2"] == pytest.approx({"ndcg@10": 1.0, "mrr@10": 1.0, "recall@100": 1.0})
    # A judged query with nothing relevant counts, as 0; an unjudged query does not count.
    assert report.per_query["q3"] == {"ndcg@10": 0.0, "mrr@10": 0.0, "recall@100": 0.0}
    assert set(report.per_query) == {"q1", "q2", "q3"}
    assert report.mean["mrr@10"] == pytest.approx(1.5 / 3)


def test_equal_scores_are_evaluated_in_list_order() -> None:
    qrels = {"q": {"rel": 1}}
    first = compute_metrics(qrels, {"q": [("rel", 1.0)] + [(f"n{i}", 1.0) for i in range(20)]})
    last = compute_metrics(qrels, {"q": [(f"n{i}", 1.0) for i in range(20)] + [("rel", 1.0)]})
    assert first.mean["mrr@10"] == 1.0
    assert last.mean["mrr@10"] == 0.0 and last.mean["recall@100"] == 1.0


def test_empty_ranking_scores_zero() -> None:
    report = compute_metrics({"q": {"a": 1}}, {"q": []})
    assert report.mean == {"ndcg@10": 0.0, "mrr@10": 0.0, "recall@100": 0.0}


def test_random_rankings_match_textbook_definitions(tmp_path: Path) -> None:
    data = load_beir(build_docstring_beir(tmp_path / "c", num_queries=15, num_distractors=20))
    doc_ids = list(data.corpus)
    rng = random.Random(3)
    for _ in range(5):
        ranking = {}
        for qid, judged in data.qrels.items():
            pool = rng.sample(doc_ids, rng.randint(0, 12)) + [d for d in judged if rng.random() < 0.7]
            ranked = list(dict.fromkeys(rng.sample(pool, len(pool))))
            ranking[qid] = [(d, rng.choice([0.0, 1.0])) for d in ranked]  # many ties on purpose
        report = compute_metrics(data.qrels, ranking)
        means, per_query = reference_metrics(data.qrels, {q: [d for d, _ in docs] for q, docs in ranking.items()})
        assert report.mean == pytest.approx(means, abs=1e-12)
        for qid in data.qrels:
            assert report.per_query[qid] == pytest.approx(per_query[qid], abs=1e-12)
