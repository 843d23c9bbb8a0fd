"""Exactness against upstream mxbai-rerank 0.1.6.

``golden/golden_scores.json`` holds the token ids and scores upstream produced for the same
tiny checkpoints (see ``golden/generate_golden.py``, run once in a separate virtualenv with
transformers < 5). Here this package must reproduce the token ids exactly and the scores
within 1e-3, at the case's batch size and at other batch sizes and token budgets.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mxbai_rerank import MxbaiRerankV1, MxbaiRerankV2

GOLDEN = json.loads((Path(__file__).parent / "golden" / "golden_scores.json").read_text(encoding="utf-8"))
CASES = {case["name"]: case for case in GOLDEN["cases"]}
V2_CASES = [name for name, case in CASES.items() if case["model"] == "v2"]
V1_CASES = [name for name, case in CASES.items() if case["model"] == "v1"]
TOL = 1e-3


@pytest.fixture(scope="module")
def rerankers(v2_model_dir: Path, v1_model_dir: Path):
    @cache
    def get(model: str, max_length: int | None) -> Any:
        if model == "v2":
            kwargs = {} if max_length is None else {"max_length": max_length}
            return MxbaiRerankV2(str(v2_model_dir), device="cpu", torch_dtype=torch.float32, **kwargs)
        return MxbaiRerankV1(str(v1_model_dir), device="cpu", torch_dtype=torch.float32, max_length=max_length)

    return get


def _scores(reranker: Any, case: dict[str, Any], **kwargs: Any) -> np.ndarray:
    n = len(case["documents"])
    results = reranker.rank(
        case["query"], case["documents"], top_k=n, sort=False, instruction=case["instruction"], **kwargs
    )
    assert [r.index for r in results] == list(range(n))
    return np.array([r.score for r in results])


@pytest.mark.parametrize("name", V2_CASES)
def test_v2_token_ids_match_upstream(rerankers: Any, name: str) -> None:
    case = CASES[name]
    reranker = rerankers("v2", case["max_length"])
    encoded = reranker.encode_pairs(
        [case["query"]] * len(case["documents"]), case["documents"], instruction=case["instruction"]
    )
    assert encoded.input_ids == case["input_ids"]


@pytest.mark.parametrize("name", V2_CASES)
def test_v2_scores_match_upstream(rerankers: Any, name: str) -> None:
    case = CASES[name]
    reranker = rerankers("v2", case["max_length"])
    assert reranker.estimated_max == case["estimated_max"]
    raw = _scores(reranker, case, batch_size=case["batch_size"])
    np.testing.assert_allclose(raw, case["raw"], atol=TOL, rtol=0)
    normalized = _scores(reranker, case, batch_size=case["batch_size"], normalize=True)
    np.testing.assert_allclose(normalized, case["normalized"], atol=TOL, rtol=0)


@pytest.mark.parametrize("name", ["v2_mixed_lengths", "v2_batch_bs32", "v2_multilingual"])
@pytest.mark.parametrize(("batch_size", "max_batch_tokens"), [(1, None), (5, None), (64, 256), (64, 100_000)])
def test_v2_scores_do_not_depend_on_batching(
    rerankers: Any, name: str, batch_size: int, max_batch_tokens: int | None
) -> None:
    case = CASES[name]
    reranker = rerankers("v2", case["max_length"])
    raw = _scores(reranker, case, batch_size=batch_size, max_batch_tokens=max_batch_tokens)
    np.testing.assert_allclose(raw, case["raw"], atol=TOL, rtol=0)


@pytest.mark.parametrize("name", V1_CASES)
def test_v1_matches_upstream(rerankers: Any, name: str) -> None:
    case = CASES[name]
    reranker = rerankers("v1", case["max_length"])
    encoded = reranker.encode_pairs([case["query"]] * len(case["documents"]), case["documents"])
    assert encoded.input_ids == case["input_ids"]
    np.testing.assert_allclose(_scores(reranker, case, batch_size=case["batch_size"]), case["raw"], atol=TOL, rtol=0)
    np.testing.assert_allclose(_scores(reranker, case, batch_size=3), case["raw"], atol=TOL, rtol=0)


def test_golden_cases_cover_the_required_inputs() -> None:
    """The issue names these kinds of input; the golden file must keep covering them."""
    needed = [
        "plain",
        "instruction",
        "multilingual",
        "code",
        "empty",
        "duplicates",
        "truncated_query",
        "truncated_document",
    ]
    for kind in needed:
        assert any(kind in name for name in V2_CASES), kind
    assert {CASES[n]["batch_size"] for n in V2_CASES} >= {1, 3, 32}
