"""Small numeric and torch helpers; the names and behaviour of upstream 0.1.6's ``utils``."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .families._base import sigmoid

__all__ = ["TorchModule", "auto_device", "ensure_multiple_of_8", "sigmoid", "sigmoid_normalize", "top_k_numpy"]

_HALF_DTYPES = (torch.float16, torch.bfloat16)


def sigmoid_normalize(x: Any, estimated_max: float = 9.0) -> Any:
    """``sigmoid(x - estimated_max / 2)``: maps raw v2 scores into (0, 1), centred at half the max."""
    if isinstance(x, torch.Tensor):
        return torch.sigmoid(x - estimated_max / 2)
    return sigmoid(np.asarray(x, dtype=np.float64) - estimated_max / 2)


def top_k_numpy(scores: np.ndarray, k: int, *, sort: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best ``(scores, indices)``.

    With ``sort`` they come best first, ties broken by the lower index; without it they come
    in index order. ``k`` larger than the number of scores returns all of them.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
        raise ValueError(f"top_k must be a positive integer, got {k!r}")
    scores = np.asarray(scores)
    k = min(int(k), len(scores))
    if k == 0:
        return scores[:0], np.zeros(0, dtype=np.int64)
    # Stable sort on -score keeps index order among equal scores.
    order = np.argsort(-scores, kind="stable")[:k]
    if not sort:
        order = np.sort(order)
    return scores[order], order


def auto_device() -> str:
    """``"cuda"`` when a GPU is visible, else ``"cpu"``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def ensure_multiple_of_8(x: int, max_value: int | None = None) -> int:
    """``x`` rounded up to a multiple of 8, capped at the largest multiple of 8 <= ``max_value``."""
    rounded = -(-x // 8) * 8
    if max_value is not None:
        cap = max_value - max_value % 8
        if rounded > cap and x % 8:
            return cap
    return rounded


class TorchModule(torch.nn.Module):
    """An ``nn.Module`` that knows its device and dtype (upstream's helper base class)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("_dummy", torch.empty(0), persistent=False)

    def to(  # type: ignore[override]
        self, device: str | torch.device | int | None = None, dtype: torch.dtype | None = None, **kwargs: Any
    ) -> TorchModule:
        if isinstance(device, torch.dtype):  # ``.to(torch.float32)``, as nn.Module allows
            device, dtype = None, device
        # Upstream: half precision moving onto the CPU becomes float32. A model already on the
        # CPU keeps its dtype (the default CPU dtype is bf16 where the processor has native bf16).
        if (
            device is not None
            and torch.device(device).type == "cpu"
            and self.device.type != "cpu"
            and dtype is None
            and self.dtype in _HALF_DTYPES
        ):
            dtype = torch.float32
        return super().to(device=device, dtype=dtype, **kwargs)

    @property
    def device(self) -> torch.device:
        return self._dummy.device

    @property
    def dtype(self) -> torch.dtype:
        return self._dummy.dtype

    def mps(self) -> TorchModule:
        if not torch.backends.mps.is_available():
            raise RuntimeError("MPS is not available")
        return self.to(torch.device("mps"))
