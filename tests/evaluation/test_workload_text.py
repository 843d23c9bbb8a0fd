"""Benchmark workloads from stdlib docstrings, and ``benchmark()`` on the tiny model."""

from __future__ import annotations

import re
import statistics

import pytest

from mxbai_rerank.evaluation import benchmark, generate_workload, stdlib_sentences, workload_from_documents


def test_sentences_are_english_prose() -> None:
    sentences = stdlib_sentences()
    assert len(sentences) > 500
    assert len(set(sentences)) == len(sentences)
    for sentence in sentences:
        assert sentence[0].isupper() and sentence.endswith(".")
        assert ">>>" not in sentence
        assert len(re.findall(r"[A-Za-z]+", sentence)) >= 5
    common = {"the", "a", "is", "of", "to", "and"}
    assert sum(bool(common & set(s.lower().split())) for s in sentences) > 0.8 * len(sentences)


def test_generated_workload_is_deterministic_and_mixed_length() -> None:
    workload = generate_workload(4, 60, seed=1)
    assert workload == generate_workload(4, 60, seed=1)
    assert workload != generate_workload(4, 60, seed=2)
    assert len(workload.queries) == 4 and [len(d) for d in workload.documents] == [60] * 4
    lengths = [len(doc.split()) for docs in workload.documents for doc in docs]
    assert min(lengths) < 30 and max(lengths) > 250
    assert 20 < statistics.median(lengths) < 200
    sentences = set(stdlib_sentences())
    assert all(q in sentences for q in workload.queries)
    with pytest.raises(ValueError):
        generate_workload(0, 3)


def test_workload_from_a_document_pool() -> None:
    pool = [f"document number {i}" for i in range(10)]
    workload = workload_from_documents(pool, 3, 4, seed=0)
    for docs in workload.documents:
        assert len(docs) == 4 and len(set(docs)) == 4 and set(docs) <= set(pool)
    small = workload_from_documents(pool[:2], 2, 5, seed=0)
    assert all(len(docs) == 5 and set(docs) <= set(pool[:2]) for docs in small.documents)
    with pytest.raises(ValueError, match="empty"):
        workload_from_documents([], 1, 1)


def test_benchmark_measures_the_workload(v2_reranker) -> None:
    workload = generate_workload(2, 3, seed=5)
    result = benchmark(v2_reranker, workload, max_batch_tokens=1024, warmup=0)
    expected_tokens = sum(
        v2_reranker.encode_pairs([q] * len(docs), docs).num_tokens
        for q, docs in zip(workload.queries, workload.documents, strict=True)
    )
    assert (result.pairs, result.queries, result.tokens) == (6, 2, expected_tokens)
    assert result.max_batch_tokens == 1024 and result.dtype == "float32" and result.device == "cpu"
    assert result.latency_ms_mean * 2 == pytest.approx(result.seconds * 1000)
    assert result.to_dict()["tokens_per_s"] == pytest.approx(expected_tokens / result.seconds)
