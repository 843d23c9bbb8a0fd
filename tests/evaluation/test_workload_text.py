"""Benchmark workloads from stdlib docstrings, and ``benchmark()`` on the tiny model."""

from __future__ import annotations

import re
import statistics

import pytest

from mxbai_rerank import Scorer, ScorerInfo
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


class ProtocolOnly:
    """A real model seen only through the ``Scorer`` protocol (no attributes, no ``score_pairs``)."""

    def __init__(self, inner: Scorer) -> None:
        self._inner = inner
        self.calls = 0

    def encode_pairs(self, queries, documents, *, instruction=None, rank_fields=None):
        return self._inner.encode_pairs(queries, documents, instruction=instruction, rank_fields=rank_fields)

    def score_encoded(self, encoded, *, batch_size=None, max_batch_tokens=None, show_progress=False):
        self.calls += 1
        assert max_batch_tokens == 1024, "the budget must reach the scorer"
        return self._inner.score_encoded(encoded, batch_size=batch_size, max_batch_tokens=max_batch_tokens)

    def postprocess(self, raw, *, normalize=False):
        return self._inner.postprocess(raw, normalize=normalize)

    def info(self) -> ScorerInfo:
        return self._inner.info()

    def tokenizer_copy(self):
        return self._inner.tokenizer_copy()


def test_benchmark_measures_the_workload_through_the_scorer_protocol(v2_reranker) -> None:
    workload = generate_workload(2, 3, seed=5)
    scorer = ProtocolOnly(v2_reranker)
    result = benchmark(scorer, workload, max_batch_tokens=1024, warmup=1)
    assert scorer.calls == 1 + 2, "one untimed and one timed call per query"
    # Real (unpadded) tokens, counted independently from the token ids.
    real_tokens = sum(
        len(ids)
        for q, docs in zip(workload.queries, workload.documents, strict=True)
        for ids in v2_reranker.encode_pairs([q] * len(docs), docs).input_ids
    )
    assert (result.pairs, result.queries, result.real_tokens) == (6, 2, real_tokens)
    info = v2_reranker.info()
    assert (result.model, result.device, result.dtype, result.max_length) == (
        info.model_id, "cpu", "float32", info.max_length
    )  # fmt: skip
    assert result.max_batch_tokens == 1024
    assert result.latency_ms_mean * 2 == pytest.approx(result.seconds * 1000)
    data = result.to_dict()
    assert "tokens" not in data, "padded and real token counts must not share a name"
    assert data["tokens_per_s"] == pytest.approx(real_tokens / result.seconds)
    with pytest.raises(TypeError, match="Scorer"):
        benchmark(object(), workload)  # type: ignore[arg-type]
