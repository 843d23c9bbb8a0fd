"""long_documents="chunk": windows, aggregation, spans, and finding what truncation cuts off."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from mxbai_rerank import MxbaiRerankV1, MxbaiRerankV2, aggregate_windows, load, register_family
from mxbai_rerank._batching import Batch
from mxbai_rerank._chunking import plan_windows
from mxbai_rerank._heads import ScoreHead
from mxbai_rerank._registry import FAMILIES
from mxbai_rerank.families.mxbai_v1 import FAMILY as V1
from mxbai_rerank.families.mxbai_v2 import FAMILY as V2

QUERY = "Who wrote the novel?"
FILLER = "The weather report mentions light rain in the afternoon. "
NEEDLE = "Harper Lee wrote it in zebras."


class NeedleHead(ScoreHead):
    """Scores a row by how often the needle token occurs in it: a model that knows the answer."""

    def __init__(self, needle_id: int) -> None:
        super().__init__()
        self.needle_id = needle_id

    def forward(self, batch: Batch, prefix: object | None = None) -> torch.Tensor:
        return (batch.input_ids == self.needle_id).sum(dim=1).float()


def _needle_family(base, name: str, needle_id: int):
    @dataclasses.dataclass(frozen=True)
    class NeedleFamily(type(base)):
        def build_head(self, model, encoder):
            return NeedleHead(needle_id)

    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
    fields.update(name=name, reranker_class="mxbai_rerank:TransformerReranker")
    return NeedleFamily(**fields)


@pytest.fixture(params=["v2", "v1"])
def needle_reranker(request, v2_model_dir: Path, v1_model_dir: Path):
    base, path = (V2, v2_model_dir) if request.param == "v2" else (V1, v1_model_dir)
    probe = load(str(path), device="cpu", torch_dtype="float32")
    needle_id = probe.tokenizer(" zebras", add_special_tokens=False)["input_ids"][-1]
    family = _needle_family(base, f"test-needle-{request.param}", needle_id)
    register_family(family)
    try:
        yield load(str(path), family=family.name, device="cpu", max_length=64)
    finally:
        FAMILIES.pop(family.name)


def test_chunking_finds_what_truncation_cuts_off(needle_reranker) -> None:
    doc = FILLER * 20 + NEEDLE + " " + FILLER * 3
    none, one = needle_reranker.postprocess(np.array([0.0, 1.0], dtype=np.float32))
    assert needle_reranker.rank(QUERY, [doc])[0].score == none  # the needle lies beyond the window
    found = needle_reranker.rank(QUERY, [doc, FILLER * 20], long_documents="chunk")
    assert found[0].index == 0 and found[0].score == pytest.approx(one)
    start, end = found[0].span
    assert NEEDLE in doc[start:end]
    assert found[1].score == none


def test_aggregates(needle_reranker) -> None:
    doc = FILLER * 20 + NEEDLE + " " + FILLER * 3
    kwargs = {"long_documents": "chunk", "chunk_size": 24, "chunk_stride": 16}
    windows = needle_reranker.encode_pairs([QUERY], [doc], **kwargs).windows
    hits = np.array([float("zebras" in doc[a:b]) for _, a, b in windows], dtype=np.float32)
    assert 0 < hits.sum() < len(hits)

    def score(how: str) -> float:
        return float(needle_reranker.score_pairs([QUERY], [doc], chunk_aggregate=how, **kwargs)[0])

    expected = needle_reranker.postprocess(np.array([hits.max(), hits[0], hits.mean()], dtype=np.float32))
    assert [score("max"), score("first"), score("mean")] == pytest.approx(expected.tolist())


@pytest.mark.parametrize("which", ["v2", "v1"])
def test_windows_cover_the_document_within_the_room(which: str, v2_reranker, v1_reranker) -> None:
    reranker = v2_reranker if which == "v2" else v1_reranker
    doc = "".join(f"Sentence {i} is here. " for i in range(400))
    room = reranker.engine.encoder.document_room(QUERY)
    encoded = reranker.encode_pairs([QUERY], [doc], long_documents="chunk", chunk_size=min(100, room), chunk_stride=60)
    spans = [(a, b) for _, a, b in encoded.windows]
    assert spans[0][0] == 0 and spans[-1][1] == len(doc.rstrip())
    assert all(a2 < b1 for (_, b1), (a2, _) in itertools.pairwise(spans))  # consecutive windows overlap
    for (a, b), ids in zip(spans, encoded.input_ids):
        assert len(reranker.tokenizer(doc[a:b], add_special_tokens=False)["input_ids"]) <= 100
        assert doc[a:b].endswith(".")  # cut on sentence boundaries
        # every window is scored whole: its text survives the encoder's truncation
        assert reranker.tokenizer.decode(ids).count("Sentence") == doc[a:b].count("Sentence")


@pytest.mark.parametrize("which", ["v2", "v1"])
def test_documents_that_fit_score_exactly_as_with_truncation(which: str, v2_reranker, v1_reranker) -> None:
    reranker = v2_reranker if which == "v2" else v1_reranker
    docs = ["A short document.", "Another one, a little longer than the first."]
    truncated = reranker.rank(QUERY, docs)
    chunked = reranker.rank(QUERY, docs, long_documents="chunk")
    assert [(r.index, r.score) for r in chunked] == [(r.index, r.score) for r in truncated]
    assert all(r.span == (0, len(docs[r.index])) for r in chunked) and all(r.span is None for r in truncated)


def test_max_equals_the_best_window_scored_alone(v2_reranker: MxbaiRerankV2) -> None:
    doc = "".join(f"Fact {i}: the river crosses town number {i}. " for i in range(300))
    encoded = v2_reranker.encode_pairs([QUERY], [doc], long_documents="chunk", chunk_size=200)
    texts = [doc[a:b] for _, a, b in encoded.windows]
    alone = v2_reranker.score_pairs([QUERY] * len(texts), texts)
    result = v2_reranker.rank(QUERY, [doc], long_documents="chunk", chunk_size=200)[0]
    assert len(texts) > 1
    assert result.score == pytest.approx(float(alone.max()), abs=1e-5)
    assert result.span == encoded.windows[int(np.argmax(alone))][1:]


def test_aggregate_windows_of_merged_requests(v1_reranker: MxbaiRerankV1) -> None:
    from mxbai_rerank import EncodedPairs

    long_doc = "word " * 2000
    a = v1_reranker.encode_pairs([QUERY] * 2, [long_doc, "short"], long_documents="chunk")
    b = v1_reranker.encode_pairs([QUERY], [long_doc], long_documents="chunk")
    merged = EncodedPairs.concat([a, b])
    assert merged.num_documents == 3
    raw = v1_reranker.score_encoded(merged)
    scores, spans = aggregate_windows(raw, merged.windows)
    alone = v1_reranker.score_pairs([QUERY] * 3, [long_doc, "short", long_doc], long_documents="chunk")
    np.testing.assert_allclose(v1_reranker.postprocess(scores), alone, atol=1e-6)
    assert spans[1] == (0, 5)


def test_bad_chunking_options(v2_reranker: MxbaiRerankV2) -> None:
    doc = "word " * 2000
    with pytest.raises(ValueError, match=r"chunk_stride \(50\) must be smaller than chunk_size"):
        v2_reranker.rank(QUERY, [doc], long_documents="chunk", chunk_size=50, chunk_stride=50)
    with pytest.raises(ValueError, match="chunk_size=100000 does not fit next to the query"):
        v2_reranker.rank(QUERY, [doc], long_documents="chunk", chunk_size=100_000)
    with pytest.raises(ValueError, match="chunk_aggregate must be one of max, first, mean"):
        v2_reranker.rank(QUERY, [doc], long_documents="chunk", chunk_aggregate="median")
    with pytest.raises(ValueError, match="long_documents must be 'truncate' or 'chunk'"):
        v2_reranker.rank(QUERY, [doc], long_documents="split")
    with pytest.raises(ValueError, match="need long_documents='chunk'"):
        v2_reranker.rank(QUERY, [doc], chunk_size=50)
    with pytest.raises(ValueError, match="chunk_size must be a positive number"):
        v2_reranker.rank(QUERY, [doc], long_documents="chunk", chunk_size=0)


def test_plan_windows_never_repeat_or_skip_with_long_sentences() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        lengths = rng.integers(1, 40, size=int(rng.integers(1, 30)))
        text = "".join("x" * (int(k) - 1) + "." for k in lengths)  # one token per character
        offsets = [(i, i + 1) for i in range(len(text))]
        size = int(rng.integers(2, 30))
        stride = int(rng.integers(1, size))
        windows = plan_windows(text, offsets, size=size, stride=stride)
        assert windows[0][0] == 0 and windows[-1][1] == len(text)
        assert all(b - a <= size for a, b in windows)
        for (a1, b1), (a2, b2) in itertools.pairwise(windows):
            assert a1 < a2 and b1 < b2 and a2 < b1  # advancing, overlapping, never nested


def test_plan_windows_invariants() -> None:
    text = "abcdefghij" * 10
    offsets = [(i, i + 1) for i in range(len(text))]
    windows = plan_windows(text, offsets, size=30, stride=20)
    assert windows[0][0] == 0 and windows[-1][1] == len(text)
    assert all(b - a <= 30 for a, b in windows)
    assert all(a1 < a2 for (a1, _), (a2, _) in itertools.pairwise(windows))
    assert plan_windows("short", [(0, 5)], size=30, stride=20) == [(0, 5)]
