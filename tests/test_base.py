"""BaseReranker: input validation, empty input, and the upstream subclass contract."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mxbai_rerank import MxbaiRerankV2, NonFiniteScoreError
from mxbai_rerank.base import BaseReranker, RankResult


class LengthReranker(BaseReranker):
    """A subclass written against upstream's contract: only ``predict`` is implemented."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def predict(self, queries: list[str], documents: list[str], **kwargs: object) -> torch.Tensor:
        self.batches.append(len(documents))
        return torch.tensor([float(len(d)) for d in documents])


def test_predict_only_subclass_ranks_with_batches() -> None:
    reranker = LengthReranker()
    docs = ["a" * n for n in (3, 10, 1, 7, 5)]
    results = reranker.rank("q", docs, batch_size=2)
    assert [r.index for r in results] == [1, 3, 4, 0, 2]
    assert results[0] == RankResult(index=1, score=10.0, document="a" * 10)
    assert reranker.batches == [2, 2, 1]


@pytest.mark.parametrize(
    ("documents", "error", "message"),
    [
        ("a single string", TypeError, "documents must be a list"),
        ({"a": 1}, TypeError, "documents must be a list"),
        (None, TypeError, "documents must be a list"),
        (["ok", 3], TypeError, r"documents\[1\] must be a str or a dict, got int"),
        (["ok", None], TypeError, r"documents\[1\] must be a str or a dict, got NoneType"),
    ],
)
def test_bad_documents_are_named(v2_reranker: MxbaiRerankV2, documents: object, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        v2_reranker.rank("q", documents)  # type: ignore[arg-type]


@pytest.mark.parametrize("top_k", [0, -1, 1.5, True])
def test_bad_top_k(v2_reranker: MxbaiRerankV2, top_k: object) -> None:
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        v2_reranker.rank("q", ["a"], top_k=top_k)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="top_k"):
        v2_reranker.rank("q", [], top_k=top_k)  # type: ignore[arg-type]


def test_bad_query_and_unknown_option(v2_reranker: MxbaiRerankV2) -> None:
    with pytest.raises(TypeError, match="query must be a str"):
        v2_reranker.rank(None, ["a"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        v2_reranker.rank("q", ["a"], temperature=0.5)


def test_empty_documents_give_empty_results(v2_reranker: MxbaiRerankV2) -> None:
    assert v2_reranker.rank("q", []) == []
    assert v2_reranker.score_pairs([], []).shape == (0,)


def test_non_finite_scores_raise(v2_model_dir: Path, tmp_path: Path) -> None:
    import shutil

    from safetensors.torch import load_file, save_file

    broken = tmp_path / "nan-model"
    shutil.copytree(v2_model_dir, broken)
    weights = load_file(broken / "model.safetensors")
    key = next(k for k in weights if k.endswith("norm.weight") and "layers" not in k)
    weights[key] = torch.full_like(weights[key], math.nan)
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    reranker = MxbaiRerankV2(str(broken), device="cpu", torch_dtype=torch.float32)
    with pytest.raises(NonFiniteScoreError, match="non-finite score for 2 pair"):
        reranker.rank("q", ["a", "b"])


def test_scores_are_plain_floats(v2_reranker: MxbaiRerankV2) -> None:
    result = v2_reranker.rank("q", ["a", "b"])[0]
    assert type(result.score) is float and type(result.index) is int
    assert np.isfinite(result.score)
