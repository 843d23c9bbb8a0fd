"""long_documents="chunk" through the consumers: the rank command, evaluate() and the Ray scorer."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mxbai_rerank.cli import main

sys.path.insert(0, str(Path(__file__).parent / "evaluation"))

QUERY = "Who wrote the novel?"
LONG = "".join(f"Sentence {i} says little about anything. " for i in range(300))


def test_rank_command_chunks_and_reports_spans(tmp_path: Path, v1_model_dir: Path, v1_reranker) -> None:
    docs = tmp_path / "docs.txt"
    docs.write_text(f"{LONG}\nA short one.\n")
    base = ["rank", "-m", str(v1_model_dir), "--device", "cpu", "--dtype", "float32", "-q", QUERY, "--format", "jsonl"]
    result = CliRunner().invoke(main, [*base, "--long-documents", "chunk", "--chunk-size", "64", str(docs)])
    assert result.exit_code == 0, result.output
    rows = {row["index"]: row for row in map(json.loads, result.stdout.splitlines())}
    expected = v1_reranker.rank(QUERY, [LONG, "A short one."], long_documents="chunk", chunk_size=64)
    for r in expected:
        assert rows[r.index]["score"] == pytest.approx(r.score, abs=1e-6)
        assert tuple(rows[r.index]["span"]) == r.span
    bad = CliRunner().invoke(main, [*base, "--long-documents", "chunk", "--chunk-size", "8", "--chunk-stride", "8",
                                    str(docs)])  # fmt: skip
    assert bad.exit_code == 2 and bad.stderr.count("\n") == 1
    assert "--chunk-stride (8) must be smaller than --chunk-size (8)" in bad.stderr
    plain = CliRunner().invoke(main, [*base, "--chunk-size", "8", str(docs)])
    assert plain.exit_code == 2 and "need --long-documents='chunk'" in plain.stderr


def test_evaluate_with_chunking(tmp_path: Path, v2_reranker) -> None:
    from docstring_beir import build_docstring_beir

    from mxbai_rerank.evaluation import evaluate, load_beir

    collection = build_docstring_beir(tmp_path / "beir", num_queries=4, num_distractors=6)
    options = {"long_documents": "chunk", "chunk_size": 16, "chunk_aggregate": "mean"}
    result = evaluate(v2_reranker, collection, top_k=3, chunking=options)
    data = load_beir(collection)
    for qid, ranked in result.run.items():
        candidates = [d for d, _ in result.first_stage_run[qid]]
        texts = [data.document_text(d) for d in candidates]
        scores = v2_reranker.score_pairs([data.queries[qid]] * len(texts), texts, **options)
        assert dict(ranked) == pytest.approx(dict(zip(candidates, scores.astype(float))), abs=1e-5)
    assert result.settings["chunking"] == options


def test_ray_scorer_aggregates_windows_per_row(v1_model_dir: Path, v1_reranker) -> None:
    pytest.importorskip("pyarrow")
    from mxbai_rerank.ray import RerankScorer

    scorer = RerankScorer(str(v1_model_dir), device="cpu", torch_dtype="float32",
                          chunking={"long_documents": "chunk", "chunk_size": 32})  # fmt: skip
    queries = [QUERY, "another question", QUERY]
    documents = [LONG, "short", LONG[:500]]
    scores = scorer.score(queries, documents)
    expected = v1_reranker.score_pairs(queries, documents, long_documents="chunk", chunk_size=32)
    np.testing.assert_allclose(scores, expected, atol=1e-6)
    with pytest.raises(ValueError, match="chunk_aggregate must be one of"):
        RerankScorer(str(v1_model_dir), device="cpu", chunking={"long_documents": "chunk", "chunk_aggregate": "sum"})
