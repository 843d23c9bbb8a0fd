"""Upstream's utils: top-k, rounding to multiples of 8, sigmoid normalisation, TorchModule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mxbai_rerank.utils import TorchModule, auto_device, ensure_multiple_of_8, sigmoid_normalize, top_k_numpy


def test_top_k_sorted_breaks_ties_by_index() -> None:
    scores = np.array([0.5, 0.9, 0.5, 0.1, 0.9])
    values, indices = top_k_numpy(scores, 4)
    assert indices.tolist() == [1, 4, 0, 2]
    assert values.tolist() == [0.9, 0.9, 0.5, 0.5]


def test_top_k_unsorted_is_in_index_order_and_k_is_capped() -> None:
    scores = np.array([0.2, 0.8, 0.5])
    values, indices = top_k_numpy(scores, 2, sort=False)
    assert indices.tolist() == [1, 2] and values.tolist() == [0.8, 0.5]
    assert top_k_numpy(scores, 10)[1].tolist() == [1, 2, 0]


@pytest.mark.parametrize("k", [0, -3])
def test_top_k_rejects_non_positive(k: int) -> None:
    with pytest.raises(ValueError):
        top_k_numpy(np.array([1.0]), k)


@pytest.mark.parametrize(
    ("x", "max_value", "expected"), [(8, None, 8), (9, None, 16), (1, None, 8), (13, 20, 16), (13, 14, 8), (16, 20, 16)]
)
def test_ensure_multiple_of_8(x: int, max_value: int | None, expected: int) -> None:
    assert ensure_multiple_of_8(x, max_value) == expected


def test_sigmoid_normalize_numpy_and_torch() -> None:
    assert sigmoid_normalize(np.array([4.5]), 9.0)[0] == pytest.approx(0.5)
    assert sigmoid_normalize(np.array([6.0]), 12.0)[0] == pytest.approx(0.5)
    assert float(sigmoid_normalize(torch.tensor([4.5 + np.log(3)]), 9.0)[0]) == pytest.approx(0.75)


def test_torch_module_tracks_device_and_dtype() -> None:
    module = TorchModule()
    assert module.device == torch.device("cpu") and module.dtype == torch.float32
    # An explicit dtype is honoured (upstream turned half into float32 on the CPU; see the README's
    # differences), and a half-precision module already on the CPU keeps its dtype.
    assert module.to("cpu", dtype=torch.bfloat16).dtype == torch.bfloat16
    assert module.to("cpu").dtype == torch.bfloat16
    assert auto_device() in {"cpu", "cuda"}
