"""``RerankScorer`` in-process (no Ray): the same scores as the library, every column kept."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")

from mxbai_rerank.ray import RerankScorer  # noqa: E402

QUERIES = ["what is a reranker?", "capital of france", "what is a reranker?", "capital of france", "rust borrow"]
DOCUMENTS = [
    "A reranker scores query-document pairs.",
    "Paris is the capital and largest city of France.",
    "Bananas are yellow.",
    "Lyon is a city in France, famous for food. " * 5,
    "The borrow checker enforces ownership rules at compile time.",
]
INSTRUCTIONS = ["Find definitions.", None, "", "Find definitions.", None]


@pytest.fixture(scope="module")
def scorer(v2_model_dir: Path) -> RerankScorer:
    return RerankScorer(str(v2_model_dir), device="cpu", torch_dtype="float32")


def _table(**extra: list) -> pa.Table:
    return pa.table({"pair_id": list(range(len(QUERIES))), "query": QUERIES, "document": DOCUMENTS, **extra})


def test_scores_equal_the_library_and_columns_are_kept(scorer: RerankScorer, v2_reranker) -> None:
    out = scorer(_table(qid=["q1", "q2", "q1", "q2", "q3"]))
    expected = v2_reranker.score_pairs(QUERIES, DOCUMENTS)
    assert out.column_names == ["pair_id", "query", "document", "qid", "score"]
    assert out.schema.field("score").type == pa.float32()
    assert out["pair_id"].to_pylist() == list(range(len(QUERIES)))
    assert out["qid"].to_pylist() == ["q1", "q2", "q1", "q2", "q3"]
    np.testing.assert_allclose(out["score"].to_numpy(), expected, atol=1e-5, rtol=0)


def test_per_row_instructions_score_like_score_pairs_per_instruction(scorer: RerankScorer, v2_reranker) -> None:
    out = scorer(_table(instruction=INSTRUCTIONS))["score"].to_numpy()
    for instruction in ("Find definitions.", None):
        rows = [i for i, ins in enumerate(INSTRUCTIONS) if (ins or None) == instruction]
        expected = v2_reranker.score_pairs(
            [QUERIES[i] for i in rows], [DOCUMENTS[i] for i in rows], instruction=instruction
        )
        np.testing.assert_allclose(out[rows], expected, atol=1e-5, rtol=0)
    # The instruction changes the prompt, so it must change the score.
    assert not np.allclose(out[0], v2_reranker.score_pairs(QUERIES[:1], DOCUMENTS[:1])[0], atol=1e-4)


def test_numpy_and_pandas_batches_and_normalize(v2_model_dir: Path, scorer: RerankScorer, v2_reranker) -> None:
    pd = pytest.importorskip("pandas")
    expected = v2_reranker.score_pairs(QUERIES, DOCUMENTS)
    as_dict = scorer({"query": np.array(QUERIES, dtype=object), "document": np.array(DOCUMENTS, dtype=object)})
    np.testing.assert_allclose(as_dict["score"], expected, atol=1e-5, rtol=0)
    frame = scorer(pd.DataFrame({"query": QUERIES, "document": DOCUMENTS, "instruction": [np.nan] * len(QUERIES)}))
    np.testing.assert_allclose(frame["score"].to_numpy(), expected, atol=1e-5, rtol=0)
    normalizing = RerankScorer(str(v2_model_dir), device="cpu", torch_dtype="float32", normalize=True)
    normalized = normalizing(_table())["score"].to_numpy()
    np.testing.assert_allclose(normalized, v2_reranker.score_pairs(QUERIES, DOCUMENTS, normalize=True), atol=1e-5)
    assert ((normalized > 0) & (normalized < 1)).all()


def test_v1_model(v1_model_dir: Path, v1_reranker) -> None:
    scorer = RerankScorer(str(v1_model_dir), device="cpu", torch_dtype="float32", score_column="rerank_score")
    out = scorer(_table())
    np.testing.assert_allclose(out["rerank_score"].to_numpy(), v1_reranker.score_pairs(QUERIES, DOCUMENTS), atol=1e-5)


class ProtocolOnly:
    """A real model seen only through the ``Scorer`` protocol: no ``score_pairs``, no attributes,
    no private methods. ``RerankScorer`` must need nothing else."""

    def __init__(self, inner) -> None:
        self._inner = inner

    def encode_pairs(self, queries, documents, *, instruction=None, rank_fields=None):
        return self._inner.encode_pairs(queries, documents, instruction=instruction, rank_fields=rank_fields)

    def score_encoded(self, encoded, *, batch_size=None, max_batch_tokens=None, show_progress=False):
        return self._inner.score_encoded(encoded, batch_size=batch_size, max_batch_tokens=max_batch_tokens)

    def postprocess(self, raw, *, normalize=False):
        return self._inner.postprocess(raw, normalize=normalize)

    def info(self):
        return self._inner.info()

    def tokenizer_copy(self):
        return self._inner.tokenizer_copy()


def test_uses_only_the_scorer_protocol(scorer: RerankScorer, v2_reranker) -> None:
    protocol_only = copy.copy(scorer)
    protocol_only.reranker = ProtocolOnly(v2_reranker)
    protocol_only.normalize = True  # postprocess(normalize=True), not the raw scores
    out = protocol_only(_table(instruction=INSTRUCTIONS))["score"].to_numpy()
    for instruction in ("Find definitions.", None):
        rows = [i for i, ins in enumerate(INSTRUCTIONS) if (ins or None) == instruction]
        expected = v2_reranker.score_pairs(
            [QUERIES[i] for i in rows], [DOCUMENTS[i] for i in rows], instruction=instruction, normalize=True
        )
        np.testing.assert_allclose(out[rows], expected, atol=1e-5, rtol=0)


def test_pickles_as_its_arguments(scorer: RerankScorer) -> None:
    clone = pickle.loads(pickle.dumps(scorer))
    assert clone is not scorer and clone.reranker is not scorer.reranker
    np.testing.assert_array_equal(clone(_table())["score"].to_numpy(), scorer(_table())["score"].to_numpy())


def test_empty_batch(scorer: RerankScorer) -> None:
    out = scorer(pa.table({"query": pa.array([], pa.string()), "document": pa.array([], pa.string())}))
    assert out.num_rows == 0 and out.column_names == ["query", "document", "score"]


def test_bad_batches_raise_clear_errors(scorer: RerankScorer) -> None:
    with pytest.raises(ValueError, match="no 'document' column"):
        scorer(pa.table({"query": QUERIES}))
    with pytest.raises(ValueError, match="'document' is null in row 1"):
        scorer(pa.table({"query": QUERIES[:2], "document": ["x", None]}))
    with pytest.raises(ValueError, match="already has a column named 'score'"):
        scorer(_table(score=[0.0] * len(QUERIES)))
