"""``mxbai-rerank eval`` end to end on a BEIR-format collection made from stdlib docstrings.

The metrics the command reports are checked against textbook nDCG/MRR/recall computed here
from the run files it wrote, and its reranked scores against the library scoring each
(query, "title text") pair directly.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from mxbai_rerank.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evaluation"))

from docstring_beir import (
    build_docstring_beir,
    read_qrels,
    read_run_lines,
    reference_metrics,
    run_order,
)

METRICS = ("ndcg@10", "mrr@10", "recall@100")


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_docstring_beir(tmp_path_factory.mktemp("beir") / "docstrings", num_queries=20, num_distractors=40)


def invoke(args: list[str]) -> Result:
    result = CliRunner().invoke(main, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    return result


def eval_args(model_dir: Path, dataset: Path | str, *extra: str) -> list[str]:
    return ["eval", "-m", str(model_dir), "--device", "cpu", "--dtype", "float32", "--dataset", str(dataset), *extra]


def check_run_file(path: Path, top_k: int) -> dict[str, list[str]]:
    rows = read_run_lines(path)
    assert rows, path
    for row in rows:
        assert len(row) == 6 and row[1] == "Q0", row
    by_query: dict[str, list[list[str]]] = {}
    for row in rows:
        by_query.setdefault(row[0], []).append(row)
    for qid, entries in by_query.items():
        assert [int(r[3]) for r in entries] == list(range(1, len(entries) + 1)), qid
        scores = [float(r[4]) for r in entries]
        assert scores == sorted(scores, reverse=True), qid
        assert len(entries) <= top_k
        assert len({r[2] for r in entries}) == len(entries)
    return run_order(rows)


def check_metrics(reported: dict, per_query: dict, qrels: dict, ranking: dict[str, list[str]], stage: str) -> None:
    means, reference = reference_metrics(qrels, ranking)
    for metric in METRICS:
        assert reported[metric] == pytest.approx(means[metric], abs=1e-9), (stage, metric)
    assert set(per_query) == set(qrels)
    for qid, values in reference.items():
        for metric in METRICS:
            assert per_query[qid][stage][metric] == pytest.approx(values[metric], abs=1e-9), (stage, qid, metric)


def test_eval_bm25_end_to_end(tmp_path: Path, collection: Path, v2_model_dir: Path, v2_reranker) -> None:
    out = tmp_path / "out"
    result = invoke(eval_args(v2_model_dir, collection, "--top-k", "5", "--output", str(out)))
    assert result.exit_code == 0, result.output

    reranked = check_run_file(out / "run.trec", top_k=5)
    first = check_run_file(out / "first_stage.trec", top_k=5)
    metrics = json.loads((out / "metrics.json").read_text())
    qrels = read_qrels(collection / "qrels" / "test.tsv")
    check_metrics(metrics["first_stage"], metrics["per_query"], qrels, first, "first_stage")
    check_metrics(metrics["reranked"], metrics["per_query"], qrels, reranked, "reranked")

    # Reranking reorders each query's BM25 candidates and nothing else.
    assert {q: set(d) for q, d in reranked.items()} == {q: set(d) for q, d in first.items()}
    # BM25 over title + text finds most docstrings from their first sentence.
    assert metrics["first_stage"]["recall@100"] > 0.5

    # The reranker saw "title text" for each candidate: rescore independently.
    corpus = {d["_id"]: d for d in map(json.loads, (collection / "corpus.jsonl").read_text().splitlines())}
    queries = {q["_id"]: q["text"] for q in map(json.loads, (collection / "queries.jsonl").read_text().splitlines())}
    rows = read_run_lines(out / "run.trec")
    expected = v2_reranker.score_pairs(
        [queries[r[0]] for r in rows], [f"{corpus[r[2]]['title']} {corpus[r[2]]['text']}".strip() for r in rows]
    )
    assert [float(r[4]) for r in rows] == pytest.approx(expected.tolist(), abs=1e-4)

    assert metrics["settings"]["first_stage"] == "bm25" and metrics["settings"]["top_k"] == 5
    assert metrics["model"]["family"] == "mxbai-v2" and metrics["model"]["dtype"] == "float32"
    assert metrics["dataset"]["num_queries"] == len(qrels) == 20
    timing = metrics["timing"]
    assert timing["num_pairs"] == len(rows)
    assert timing["documents_per_s"] == pytest.approx(len(rows) / timing["rerank_s"])
    assert timing["queries_per_s"] == pytest.approx(len(reranked) / timing["rerank_s"])

    # The printed comparison shows the same numbers.
    table = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines() if line.strip()}
    for label, metric in [("nDCG@10", "ndcg@10"), ("MRR@10", "mrr@10"), ("Recall@100", "recall@100")]:
        before, after, change = (float(x) for x in table[label])
        assert before == pytest.approx(metrics["first_stage"][metric], abs=6e-5)
        assert after == pytest.approx(metrics["reranked"][metric], abs=6e-5)
        assert change == pytest.approx(after - before, abs=2e-4)


def test_eval_with_run_file(tmp_path: Path, collection: Path, v2_model_dir: Path) -> None:
    qrels = read_qrels(collection / "qrels" / "dev.tsv")
    corpus_ids = [json.loads(line)["_id"] for line in (collection / "corpus.jsonl").read_text().splitlines()]
    # Per query: its relevant document at a query-dependent depth among others, one id the
    # corpus lacks, listed out of score order; plus a query without judgements.
    lines, given = [], {}
    for n, qid in enumerate(sorted(qrels)):
        relevant = next(d for d, r in qrels[qid].items() if r == 2)
        others = [d for d in corpus_ids[n * 3 : n * 3 + 6] if d not in qrels[qid]]
        docs = [*others[: n % 4], relevant, "not-in-corpus", *others[n % 4 :]]
        given[qid] = [d for d in docs if d != "not-in-corpus"][:4]
        scored = [(d, 10.0 - i) for i, d in enumerate(docs)]
        lines += [f"{qid} Q0 {d} {i + 1} {s} bm25x" for i, (d, s) in enumerate(reversed(scored))]
    lines.append("unjudged Q0 d1 1 3.0 bm25x")
    run_file = tmp_path / "given.run"
    run_file.write_text("\n".join(lines) + "\n", encoding="utf-8")

    out = tmp_path / "out"
    result = invoke(eval_args(v2_model_dir, collection, "--split", "dev", "--first-stage", str(run_file), "-k", "4",
                              "-o", str(out)))  # fmt: skip
    assert result.exit_code == 0, result.output
    first = check_run_file(out / "first_stage.trec", top_k=4)
    reranked = check_run_file(out / "run.trec", top_k=4)
    # The first stage is the top 4 of the given run by score, unknown ids skipped.
    assert first == given
    assert {q: set(d) for q, d in reranked.items()} == {q: set(d) for q, d in given.items()}
    metrics = json.loads((out / "metrics.json").read_text())
    check_metrics(metrics["first_stage"], metrics["per_query"], qrels, first, "first_stage")
    check_metrics(metrics["reranked"], metrics["per_query"], qrels, reranked, "reranked")
    assert metrics["settings"]["first_stage"] == str(run_file)
    assert metrics["settings"]["unknown_documents"] == len(qrels)
    assert metrics["dataset"]["split"] == "dev"


def _one_error_line(result: Result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def test_eval_errors_are_one_line(tmp_path: Path, collection: Path, v2_model_dir: Path, monkeypatch) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "qrels").mkdir()
    (broken / "corpus.jsonl").write_text('{"_id": "d1", "text": "ok"}\n{"_id": "d2", "text": \n', encoding="utf-8")
    (broken / "queries.jsonl").write_text('{"_id": "q1", "text": "query"}\n', encoding="utf-8")
    (broken / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n", encoding="utf-8")
    bad_run = tmp_path / "bad.run"
    bad_run.write_text("q0 Q0 d0 1 high tag\n", encoding="utf-8")

    # No network is needed: the download points at a closed local port.
    monkeypatch.setenv("MXBAI_RERANK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MXBAI_RERANK_BEIR_URL", "http://127.0.0.1:9/beir")
    cases = [
        (eval_args(v2_model_dir, tmp_path / "missing"), 1, "does not exist"),
        (eval_args(v2_model_dir, collection, "--split", "train"), 1, "available: dev, test"),
        (eval_args(v2_model_dir, broken), 1, "corpus.jsonl:2: not a valid JSON line"),
        (eval_args(v2_model_dir, collection, "--first-stage", str(tmp_path / "none.run")), 2, "no such run file"),
        (eval_args(v2_model_dir, collection, "--first-stage", str(bad_run)), 1, "bad.run:1: score 'high'"),
        (eval_args(v2_model_dir, "beir:scifact"), 1, "cannot download BEIR dataset 'scifact'"),
        (eval_args(v2_model_dir, collection, "--top-k", "0"), 2, "--top-k"),
        (eval_args(tmp_path / "no-model", collection), 1, "does not exist"),
    ]
    for args, code, message in cases:
        result = invoke(args)
        assert result.exit_code == code, (args, result.output)
        assert message in _one_error_line(result), args


def test_eval_help_has_examples() -> None:
    result = invoke(["eval", "--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.stdout and "beir:scifact" in result.stdout and "--first-stage" in result.stdout
