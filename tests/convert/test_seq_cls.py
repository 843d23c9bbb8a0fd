"""``convert --to seq-cls``: the classifier's logit is this package's raw score, in every stack that loads it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mxbai_rerank import MxbaiRerankV2, load
from mxbai_rerank._batching import collate
from mxbai_rerank.convert import convert_to_seq_cls

# Queries and documents that end in a letter or digit: the whole-string tokenization of the
# rendered prompt (sentence-transformers, vLLM) then equals this package's piecewise one.
PLAIN = [
    ("what is a cat", "A cat is a small domesticated feline"),
    ("what is a cat", "Bread is baked from flour water and yeast"),
    ("baking bread at home", "Knead the dough for 10 minutes"),
    ("baking bread at home", "x"),
    ("python csv module", "The csv module reads and writes tabular data " * 12 + "in CSV format"),
]
# A final punctuation mark merges with the newline that follows it ("?\n", ".\n").
PUNCTUATED = [("how do I bake bread?", "Mix flour and water. Knead it."), ("cats?", "Cats purr.")]
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def seq_cls_dir(v2_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("seq-cls") / "tiny-seq-cls"
    convert_to_seq_cls(str(v2_model_dir), out)
    return out


def _raw(reranker: MxbaiRerankV2, pairs: list[tuple[str, str]]) -> np.ndarray:
    queries, documents = zip(*pairs, strict=True)
    return reranker.score_encoded(reranker.encode_pairs(list(queries), list(documents)))


def test_transformers_logit_is_the_raw_score(seq_cls_dir: Path, v2_reranker: MxbaiRerankV2) -> None:
    from transformers import AutoModelForSequenceClassification

    pairs = PLAIN + PUNCTUATED
    queries, documents = zip(*pairs, strict=True)
    encoded = v2_reranker.encode_pairs(list(queries), list(documents))
    batch = collate(encoded.input_ids, v2_reranker.engine.pad_token_id)  # right padded, mixed lengths
    model = AutoModelForSequenceClassification.from_pretrained(seq_cls_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    assert logits.shape == (len(pairs), 1)
    np.testing.assert_allclose(logits[:, 0].numpy(), v2_reranker.score_encoded(encoded), atol=TOLERANCE, rtol=0)


def test_this_package_loads_the_folder(seq_cls_dir: Path, v2_reranker: MxbaiRerankV2) -> None:
    converted = load(str(seq_cls_dir), device="cpu", torch_dtype="float32")
    assert converted.family == "mxbai-v2-seq-cls"
    assert isinstance(converted, MxbaiRerankV2)
    assert converted.estimated_max == v2_reranker.estimated_max  # carried by the config marker
    pairs = PLAIN + PUNCTUATED
    np.testing.assert_allclose(_raw(converted, pairs), _raw(v2_reranker, pairs), atol=TOLERANCE, rtol=0)
    queries, documents = zip(*pairs, strict=True)
    np.testing.assert_allclose(
        converted.score_pairs(list(queries), list(documents), normalize=True, instruction="Find recipes"),
        v2_reranker.score_pairs(list(queries), list(documents), normalize=True, instruction="Find recipes"),
        atol=TOLERANCE,
        rtol=0,
    )
    # The upstream-style class loads it too, with no family= (the folder declares its family).
    direct = MxbaiRerankV2(str(seq_cls_dir), device="cpu", torch_dtype="float32")
    assert direct.family == "mxbai-v2-seq-cls"
    np.testing.assert_allclose(_raw(direct, pairs), _raw(v2_reranker, pairs), atol=TOLERANCE, rtol=0)


def test_sentence_transformers_cross_encoder(seq_cls_dir: Path, v2_reranker: MxbaiRerankV2) -> None:
    from sentence_transformers import CrossEncoder

    encoder = CrossEncoder(str(seq_cls_dir), device="cpu")
    features = encoder[0].preprocess(PLAIN)
    ours = v2_reranker.encode_pairs([q for q, _ in PLAIN], [d for _, d in PLAIN]).input_ids
    for row, mask, expected in zip(features["input_ids"], features["attention_mask"], ours, strict=True):
        assert [int(t) for t, m in zip(row, mask, strict=True) if m] == expected
    raw = _raw(v2_reranker, PLAIN)
    np.testing.assert_allclose(encoder.predict(PLAIN), raw, atol=TOLERANCE, rtol=0)  # identity activation: raw
    # The documented normalize=True mapping: sigmoid(raw - estimated_max / 2).
    shift = v2_reranker.estimated_max / 2
    normalized = encoder.predict(PLAIN, activation_fn=lambda x: torch.sigmoid(x - shift))
    expected = v2_reranker.score_pairs([q for q, _ in PLAIN], [d for _, d in PLAIN], normalize=True)
    np.testing.assert_allclose(normalized, expected, atol=TOLERANCE, rtol=0)


def test_template_renders_the_prompt_with_an_instruction(seq_cls_dir: Path, v2_reranker: MxbaiRerankV2) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(seq_cls_dir)
    query, document = PLAIN[0]
    messages = [
        {"role": "system", "content": "Find definitions"},
        {"role": "query", "content": query},
        {"role": "document", "content": [{"type": "text", "text": document}]},
    ]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    ids = v2_reranker.encode_pairs([query], [document], instruction="Find definitions").input_ids[0]
    assert rendered == tokenizer.decode(ids)
    assert tokenizer(rendered, add_special_tokens=False)["input_ids"] == ids
