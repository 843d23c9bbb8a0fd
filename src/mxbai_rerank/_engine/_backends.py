"""Backends: the hook where the engine's loading and running of a model can change.

A backend is asked three things (see :class:`Backend`):

1. ``model_kwargs(device, dtype, family)`` - extra ``from_pretrained`` keywords (attention
   implementation, quantisation config...);
2. ``prepare(engine)`` - anything to do to the loaded model (compile, quantise, move);
3. ``run(engine, encoded, ...)`` - turn encoded pairs into raw scores, in input order.

The engine owns everything around it (tokenization, the non-finite check, inference mode,
serialising forward passes), so a backend only decides how tensors meet the model.
:class:`PaddedBackend` is the default: token-budget batches of near-equal length, right
padded, with a shared token prefix encoded once where the head declares it can reuse one.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from .._batching import collate, common_prefix_length, plan_batches
from .._encoding import EncodedPairs

if TYPE_CHECKING:
    from ..families import RerankerFamily
    from . import ScoringEngine

__all__ = ["BACKENDS", "Backend", "PaddedBackend", "get_backend"]

# Below this many shared leading tokens a separate prefix pass saves nothing.
MIN_SHARED_PREFIX = 8


class Backend(Protocol):
    name: str

    def model_kwargs(self, device: torch.device, dtype: torch.dtype, family: RerankerFamily) -> dict[str, Any]: ...

    def prepare(self, engine: ScoringEngine) -> None: ...

    def run(
        self,
        engine: ScoringEngine,
        encoded: EncodedPairs,
        *,
        max_batch_tokens: int,
        batch_size: int,
        show_progress: bool,
    ) -> np.ndarray:
        """(N,) float32 raw scores in input order."""
        ...


@dataclass
class _Group:
    """Pairs batched together after one shared prefix."""

    prefix: Any | None  # the head's state for the shared prefix, or None
    prefix_length: int
    members: list[int]  # indices into the EncodedPairs
    sequences: list[list[int]]  # each member's tokens after the prefix
    token_type_ids: list[list[int]] | None


class PaddedBackend:
    """Right-padded token-budget batches through the transformers model (eager or SDPA kernels).

    ``prefix``: how pairs are grouped when the head can reuse a shared prefix:
    ``"query"`` - per query, so the chat prefix and the query are encoded once (best where
    larger batches gain nothing: CPUs); queries with a single pair share one group, so they
    still batch together; ``"common"`` - all pairs in one group sharing only the common prefix
    (keeps batches full on GPUs); ``"off"`` - no prefix reuse; ``"auto"`` (default) - ``query``
    on a CPU, ``common`` elsewhere, decided per call from where the model is now.
    """

    name = "torch"

    def __init__(self, prefix: str = "auto") -> None:
        if prefix not in ("auto", "query", "common", "off"):
            raise ValueError(f"prefix must be 'auto', 'query', 'common' or 'off', got {prefix!r}")
        self.prefix = prefix

    def model_kwargs(self, device: torch.device, dtype: torch.dtype, family: RerankerFamily) -> dict[str, Any]:
        from ._loading import attention_implementation

        return {"attn_implementation": attention_implementation(device, dtype)} if family.attention_kernels else {}

    def prepare(self, engine: ScoringEngine) -> None:
        return None

    def _groups(self, engine: ScoringEngine, encoded: EncodedPairs) -> list[_Group]:
        mode = ("query" if engine.device.type == "cpu" else "common") if self.prefix == "auto" else self.prefix
        reuse = engine.head.reuses_prefix and mode != "off"
        members_of: dict[int, list[int]] = {}
        keys = encoded.group_ids() if reuse and mode == "query" else [0] * len(encoded)
        for i, key in enumerate(keys):
            members_of.setdefault(key, []).append(i)
        # Queries with one pair have nothing of their own to share: batch them together.
        singles = [m[0] for m in members_of.values() if len(m) == 1]
        member_lists = [m for m in members_of.values() if len(m) > 1] + ([singles] if singles else [])
        groups = []
        for members in member_lists:
            sequences = [encoded.input_ids[i] for i in members]
            shared = common_prefix_length(sequences) if reuse and len(members) > 1 else 0
            prefix = engine.head.encode_prefix(sequences[0][:shared]) if shared >= MIN_SHARED_PREFIX else None
            if prefix is None:
                shared = 0
            types = None if encoded.token_type_ids is None else [encoded.token_type_ids[i][shared:] for i in members]
            groups.append(_Group(prefix, shared, members, [seq[shared:] for seq in sequences], types))
        return groups

    def run(
        self,
        engine: ScoringEngine,
        encoded: EncodedPairs,
        *,
        max_batch_tokens: int,
        batch_size: int,
        show_progress: bool,
    ) -> np.ndarray:
        plans = [
            (group, rows)
            for group in self._groups(engine, encoded)
            for rows in plan_batches(
                [len(seq) for seq in group.sequences],
                max_tokens=max_batch_tokens,
                max_batch_size=batch_size,
                max_padding=engine.max_padding,
                context_length=group.prefix_length,
            )
        ]
        scores = torch.empty(len(encoded), dtype=torch.float32, device=engine.device)
        for group, rows in tqdm(plans, desc="Ranking", unit="batch", disable=not show_progress):
            types = None if group.token_type_ids is None else [group.token_type_ids[r] for r in rows]
            batch = collate([group.sequences[r] for r in rows], engine.pad_token_id, types)
            index = torch.tensor([group.members[r] for r in rows], device=engine.device)
            scores[index] = engine.head(batch.to(engine.device), group.prefix)
        return scores.cpu().numpy()  # one synchronisation per call


# name -> "module:factory" inside this package's ``_engine``, imported only when that backend
# is asked for, so an optional backend's extra (onnxruntime...) is needed only by its users.
BACKENDS: dict[str, str] = {
    "torch": "_backends:PaddedBackend",
    "packed": "_packed:PackedBackend",  # varlen-packed sequences, no padding (GPU path)
    "onnx": "_onnx:OnnxBackend",  # an exported ONNX graph through ONNX Runtime
    "int8": "_int8:Int8Backend",  # int8 CPU inference
}


def get_backend(backend: str | Backend | None) -> Backend:
    if backend is None:
        backend = "torch"
    if not isinstance(backend, str):
        return backend
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; available: {', '.join(sorted(BACKENDS))}")
    module, attr = BACKENDS[backend].split(":")
    factory: Callable[[], Backend] = getattr(importlib.import_module(f"{__package__}.{module}"), attr)
    return factory()
