"""MxbaiRerankV2: the public rank API, options, model facts, speed-path invariants, threads."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mxbai_rerank import MxbaiRerankV2, RankResult
from mxbai_rerank.utils import sigmoid_normalize

QUERY = "Who wrote 'To Kill a Mockingbird'?"
DOCS = [
    "'To Kill a Mockingbird' is a novel by Harper Lee published in 1960.",
    "The novel 'Moby-Dick' was written by Herman Melville.",
    "Harper Lee, an American novelist, was born in Monroeville, Alabama.",
    "Jane Austen was an English novelist known for 'Pride and Prejudice'.",
    "The Great Gatsby, by F. Scott Fitzgerald, was published in 1925.",
]


def test_rank_returns_all_documents_best_first(v2_reranker: MxbaiRerankV2) -> None:
    results = v2_reranker.rank(QUERY, DOCS)
    assert all(isinstance(r, RankResult) for r in results)
    assert sorted(r.index for r in results) == list(range(len(DOCS)))
    scores = [r.score for r in results]
    assert scores == sorted(scores, reverse=True)
    assert all(r.document == DOCS[r.index] for r in results)


def test_rank_options(v2_reranker: MxbaiRerankV2) -> None:
    full = v2_reranker.rank(QUERY, DOCS)
    top = v2_reranker.rank(QUERY, DOCS, top_k=2, return_documents=False)
    assert [(r.index, r.score) for r in top] == [(r.index, r.score) for r in full[:2]]
    assert all(r.document is None for r in top)
    unsorted = v2_reranker.rank(QUERY, DOCS, sort=False)
    assert [r.index for r in unsorted] == list(range(len(DOCS)))
    by_index = {r.index: r.score for r in full}
    assert [r.score for r in unsorted] == pytest.approx([by_index[i] for i in range(len(DOCS))])


def test_normalize_is_sigmoid_of_raw_minus_half_estimated_max(v2_reranker: MxbaiRerankV2) -> None:
    raw = v2_reranker.score_pairs([QUERY] * len(DOCS), DOCS)
    normalized = v2_reranker.score_pairs([QUERY] * len(DOCS), DOCS, normalize=True)
    expected = 1 / (1 + np.exp(-(raw.astype(np.float64) - v2_reranker.estimated_max / 2)))
    np.testing.assert_allclose(normalized, expected, rtol=1e-6)
    assert ((normalized > 0) & (normalized < 1)).all()


def test_instruction_changes_the_prompt_and_scores(v2_reranker: MxbaiRerankV2) -> None:
    plain = v2_reranker.encode_pairs([QUERY], DOCS[:1])
    instructed = v2_reranker.encode_pairs([QUERY], DOCS[:1], instruction="Find the author.")
    assert len(instructed.input_ids[0]) > len(plain.input_ids[0])
    text = v2_reranker.tokenizer.decode(instructed.input_ids[0])
    assert "instruction: Find the author.\nquery: " + QUERY + "\ndocument: " + DOCS[0] in text
    a = v2_reranker.score_pairs([QUERY], DOCS[:1])
    b = v2_reranker.score_pairs([QUERY], DOCS[:1], instruction="Find the author.")
    assert a[0] != pytest.approx(b[0], abs=1e-6)


def test_prompt_layout(v2_reranker: MxbaiRerankV2) -> None:
    ids = v2_reranker.encode_pairs(["q"], ["d"]).input_ids[0]
    text = v2_reranker.tokenizer.decode(ids)
    assert text.startswith("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud.")
    assert "<|im_start|>user\nquery: q\ndocument: d\nYou are a search relevance expert" in text
    assert text.endswith("(0 for not relevant, 1 for relevant).\nRelevance:<|im_end|>\n<|im_start|>assistant\n")


def test_truncation_budget(v2_model_dir: Path) -> None:
    reranker = MxbaiRerankV2(str(v2_model_dir), device="cpu", torch_dtype=torch.float32, max_length=40)
    long = "word " * 500
    fixed = len(reranker._encoder.prefix_ids) + len(reranker._encoder.tail_ids)
    ids = reranker.encode_pairs([long], [long]).input_ids[0]
    # query capped at 3/4 of max_length, the pair at max_length, template around it.
    assert len(ids) == fixed + 40
    query_tokens = reranker.tokenizer("query: " + long, add_special_tokens=False)["input_ids"][: 40 * 3 // 4]
    assert ids[len(reranker._encoder.prefix_ids) : len(reranker._encoder.prefix_ids) + 30] == query_tokens


def test_estimated_max_comes_from_the_registry_for_local_copies(v2_model_dir: Path, tmp_path: Path) -> None:
    local_base = tmp_path / "mxbai-rerank-base-v2"
    shutil.copytree(v2_model_dir, local_base)
    assert MxbaiRerankV2(str(local_base), device="cpu").estimated_max == 9.0
    hub_cache = tmp_path / "models--mixedbread-ai--mxbai-rerank-large-v2" / "snapshots" / "abc123"
    shutil.copytree(v2_model_dir, hub_cache)
    assert MxbaiRerankV2(str(hub_cache), device="cpu").estimated_max == 12.0
    assert MxbaiRerankV2(str(local_base), device="cpu", estimated_max=7.5).estimated_max == 7.5
    assert MxbaiRerankV2(str(v2_model_dir), device="cpu").estimated_max == 12.0  # unknown model: upstream's fallback


def test_full_vocabulary_logits_are_never_computed(v2_reranker: MxbaiRerankV2) -> None:
    calls: list[int] = []
    handle = v2_reranker.model.get_output_embeddings().register_forward_hook(lambda *_: calls.append(1))
    try:
        v2_reranker.rank(QUERY, DOCS)
    finally:
        handle.remove()
    assert calls == []


def test_score_equals_logit_difference_of_the_full_model(v2_reranker: MxbaiRerankV2) -> None:
    encoded = v2_reranker.encode_pairs([QUERY] * 2, DOCS[:2])
    ours = v2_reranker.score_encoded(encoded)
    for ids, score in zip(encoded.input_ids, ours):
        with torch.inference_mode():
            logits = v2_reranker.model(input_ids=torch.tensor([ids])).logits[0, -1]
        assert score == pytest.approx(float(logits[v2_reranker.yes_loc] - logits[v2_reranker.no_loc]), abs=1e-4)


def _in_threads(work: Callable[[str], Any], keys: list[str]) -> dict[str, Any]:
    """``work(key)`` for every key, each in its own thread at once; the results, or the first error."""
    got: dict[str, Any] = {}
    errors: list[BaseException] = []

    def run(key: str) -> None:
        try:
            got[key] = work(key)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(key,)) for key in keys]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    return got


def test_concurrent_rank_calls_from_threads(v2_reranker: MxbaiRerankV2) -> None:
    queries = [f"{QUERY} ({i})" for i in range(8)]
    expected = {q: [(r.index, round(r.score, 4)) for r in v2_reranker.rank(q, DOCS)] for q in queries}

    def work(q: str) -> list[tuple[int, float]]:
        for _ in range(3):
            ranked = [(r.index, round(r.score, 4)) for r in v2_reranker.rank(q, DOCS, batch_size=2)]
        return ranked

    assert _in_threads(work, queries) == expected


def test_bfloat16_is_close_to_float32(v2_model_dir: Path, v2_reranker: MxbaiRerankV2) -> None:
    bf16 = MxbaiRerankV2(str(v2_model_dir), device="cpu", torch_dtype="bfloat16")
    assert bf16.dtype == torch.bfloat16
    a = bf16.score_pairs([QUERY] * len(DOCS), DOCS)
    b = v2_reranker.score_pairs([QUERY] * len(DOCS), DOCS)
    np.testing.assert_allclose(a, b, atol=0.15)


def test_predict_and_normalize_scores_keep_upstream_shapes(v2_reranker: MxbaiRerankV2) -> None:
    out = v2_reranker.predict([QUERY] * 3, DOCS[:3])
    assert isinstance(out, torch.Tensor) and out.shape == (3,)
    assert torch.allclose(v2_reranker.normalize_scores(out), sigmoid_normalize(out, v2_reranker.estimated_max))


def test_many_queries_in_one_call_score_like_one_query_at_a_time(v2_reranker: MxbaiRerankV2) -> None:
    queries = [QUERY, "Which novel did Melville write?", "Who wrote Pride and Prejudice?"]
    pairs = [(q, d) for d in DOCS for q in queries]
    together = v2_reranker.score_pairs([q for q, _ in pairs], [d for _, d in pairs])
    alone = {q: v2_reranker.score_pairs([q] * len(DOCS), DOCS) for q in queries}
    expected = [alone[q][DOCS.index(d)] for q, d in pairs]
    np.testing.assert_allclose(together, expected, atol=1e-5)


def test_concatenated_requests_keep_separate_query_groups(v2_reranker: MxbaiRerankV2) -> None:
    from mxbai_rerank import EncodedPairs

    a = v2_reranker.encode_pairs([QUERY, QUERY, "other"], DOCS[:3])
    b = v2_reranker.encode_pairs([QUERY], DOCS[:1])
    assert a.groups == [0, 0, 1]
    merged = EncodedPairs.concat([a, b])
    assert merged.groups == [0, 0, 1, 2]
    np.testing.assert_allclose(
        v2_reranker.score_encoded(merged),
        np.concatenate([v2_reranker.score_encoded(a), v2_reranker.score_encoded(b)]),
        atol=1e-5,
    )


def _varied_texts(n: int) -> list[str]:
    words = ["alpha", "Beta", "gamma,", "delta.", "épsilon", "zeta's", "eta-theta", "42", "iota\n", "kappa"]
    return [" ".join(words[(i * j) % len(words)] for j in range(1 + (i * 7) % 23)) for i in range(n)]


@pytest.mark.parametrize("which", ["v2", "v1"])
def test_tokenizer_pool_encodes_long_lists_in_threads_exactly(
    which: str, v2_reranker: MxbaiRerankV2, v1_reranker
) -> None:
    """Slices encoded by several threads give exactly one tokenizer call's ids, in order, even
    after the same pooled copy truncated pairs (its truncation must not leak into ids())."""
    from mxbai_rerank import _encoding

    reranker = v2_reranker if which == "v2" else v1_reranker
    pool = reranker.engine.encoder.tokenizers
    texts = _varied_texts(5 * _encoding.MIN_TEXTS_PER_THREAD + 3)
    want = reranker.tokenizer(texts, add_special_tokens=False)["input_ids"]
    pool.pairs(texts[:3], texts[3:6], max_length=4)  # leaves truncation set on a pooled copy
    assert pool.ids(texts) == want
    assert pool.ids(texts[:5]) == want[:5]  # below the threshold: one call
    # Few long texts are split by characters: three texts, slices of about equal characters.
    long_texts = [" ".join(texts[i::3]) * 4 for i in range(3)]
    assert sum(map(len, long_texts)) >= 2 * _encoding.MIN_CHARS_PER_THREAD
    assert pool.ids(long_texts) == reranker.tokenizer(long_texts, add_special_tokens=False)["input_ids"]
    assert any(t.name.startswith("mxbai-tokenize") for t in threading.enumerate())


def _assert_same_tokenizer(tok: Any, fresh: Any, tmp_path: Path) -> None:
    """``tok`` encodes, counts, lists its vocabulary and saves exactly as ``fresh`` does."""
    from transformers import AutoTokenizer

    texts = _varied_texts(20)
    assert tok(texts, add_special_tokens=False)["input_ids"] == fresh(texts, add_special_tokens=False)["input_ids"]
    assert tok.get_vocab() == fresh.get_vocab() and len(tok) == len(fresh)
    tok.save_pretrained(str(tmp_path))
    reloaded = AutoTokenizer.from_pretrained(str(tmp_path))
    assert reloaded(texts)["input_ids"] == fresh(texts)["input_ids"]
    assert reloaded.get_vocab() == fresh.get_vocab()


def test_loaded_tokenizer_drops_its_build_copies_and_still_encodes_and_saves(
    v2_reranker: MxbaiRerankV2, v2_model_dir: Path, tmp_path: Path
) -> None:
    """The engine's Qwen2 tokenizer (and every pooled copy) no longer holds the Python
    vocabulary and merges its constructor kept (about 95 MB with the real vocabulary), and
    behaves exactly as a freshly loaded tokenizer."""
    from transformers import AutoTokenizer

    fresh = AutoTokenizer.from_pretrained(str(v2_model_dir))
    assert type(fresh).__name__ == "Qwen2Tokenizer"
    kept = [name for name in ("_vocab", "_merges") if isinstance(getattr(fresh, name, None), (dict, list))]
    assert kept == ["_vocab", "_merges"], "transformers changed what it keeps: update _BUILD_ONLY_ATTRIBUTES"
    pool = v2_reranker.engine.encoder.tokenizers
    with pool.borrow() as pooled:
        for i, tok in enumerate((v2_reranker.tokenizer, pooled, pool.copy())):
            assert all(getattr(tok, name) is None for name in kept)
            _assert_same_tokenizer(tok, fresh, tmp_path / str(i))


def test_deberta_tokenizer_drops_its_build_copy_and_still_encodes_and_saves(tmp_path: Path) -> None:
    """v1's tokenizer class (the fixture's is a generic one): its Unigram vocabulary list goes."""
    from transformers import DebertaV2Tokenizer

    from mxbai_rerank._encoding import release_build_inputs

    words = ["\u2581alpha", "\u2581beta", "\u2581gamma", "a", "b", "\u2581"]
    pieces = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]

    def build() -> Any:
        return DebertaV2Tokenizer(vocab=[(p, -float(i)) for i, p in enumerate(pieces)], unk_token="[UNK]")

    tok, fresh = build(), build()
    assert isinstance(tok._vocab, list)
    release_build_inputs(tok)
    assert tok._vocab is None
    _assert_same_tokenizer(tok, fresh, tmp_path)


def test_concurrent_long_rank_calls_match_sequential(v2_reranker: MxbaiRerankV2) -> None:
    docs = _varied_texts(48)
    queries = [f"{QUERY} ({i})" for i in range(4)]
    expected = {q: v2_reranker.score_pairs([q] * len(docs), docs).tolist() for q in queries}
    got = _in_threads(lambda q: v2_reranker.score_pairs([q] * len(docs), docs).tolist(), queries)
    for q in queries:
        np.testing.assert_allclose(got[q], expected[q], atol=1e-5)
