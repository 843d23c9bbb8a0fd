"""Backends: the hook where the engine's loading and running of a model can change.

A backend is asked three things (see :class:`Backend`):

1. ``model_kwargs(device, dtype, family)`` - extra ``from_pretrained`` keywords (attention
   implementation, quantisation config...);
2. ``prepare(engine)`` - anything to do to the loaded model (compile, quantise, move);
3. ``run(engine, encoded, ...)`` - turn encoded pairs into raw scores, in input order.

Optional hooks: ``compile(engine)`` (``compile=True``) and ``compile_pays(engine)`` (whether the
default ``compile=None`` compiles; the packed backend: packed calls on CUDA); ``streams(engine)``
with ``launch(engine, encoded, ...)`` -> scores on the device, not waited for (the engine then
tokenizes the next slice of a large call while the device runs the previous one).

The engine owns everything around it (tokenization, the non-finite check, inference mode,
serialising forward passes), so a backend only decides how tensors meet the model.
:class:`PaddedBackend` is the default on CPUs: token-budget batches of near-equal length,
right padded, with a shared token prefix encoded once where the head declares it can reuse one.
On CUDA with a varlen attention kernel, :class:`~._packed.PackedBackend` is the default (see
:func:`get_backend`).
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from .._batching import Batch, collate, common_prefix_length, plan_batches
from .._encoding import EncodedPairs

if TYPE_CHECKING:
    from ..families import RerankerFamily
    from . import ScoringEngine

__all__ = [
    "BACKENDS",
    "Backend",
    "PaddedBackend",
    "bucket_rows",
    "bucket_width",
    "get_backend",
    "pad_to",
    "sdpa_without_cudnn",
]

# Below this many shared leading tokens a separate prefix pass saves nothing.
MIN_SHARED_PREFIX = 8

# Padded shapes on CUDA are rounded up to buckets 1/8 of an octave apart (at most 12.5% more
# positions, with steps of at least 16 tokens), so a stream of new queries meets a few dozen
# shapes rather than a new one per batch.
_WIDTH_MIN_STEP = 16


def _round_up(n: int, min_step: int) -> int:
    """``n`` rounded up to a multiple of ``2 ** (bit_length(n) - 4)`` (at least ``min_step``)."""
    step = max(min_step, 1 << max(n.bit_length() - 4, 0))
    return -(-n // step) * step


def bucket_width(width: int) -> int:
    """Padded width rounded up to its bucket: multiples of 16 up to 256, then <= 12.5% more."""
    return _round_up(width, _WIDTH_MIN_STEP)


def bucket_rows(rows: int) -> int:
    """Rows rounded up to their bucket: exact up to 15, then <= 12.5% more."""
    return _round_up(rows, 1)


def pad_to(batch: Batch, rows: int, width: int, pad_id: int) -> Batch:
    """``batch`` right padded to (rows, width); added rows are one pad token long (scores discarded)."""
    b, t = batch.input_ids.shape
    if (rows, width) == (b, t):
        return batch
    ids = torch.full((rows, width), pad_id, dtype=batch.input_ids.dtype)
    mask = torch.zeros((rows, width), dtype=batch.attention_mask.dtype)
    ids[:b, :t] = batch.input_ids
    mask[:b, :t] = batch.attention_mask
    mask[b:, 0] = 1  # a filler row holds one (pad) token, so every row has a last token
    lengths = torch.ones(rows, dtype=batch.lengths.dtype)
    lengths[:b] = batch.lengths
    types = None
    if batch.token_type_ids is not None:
        types = torch.zeros((rows, width), dtype=batch.token_type_ids.dtype)
        types[:b, :t] = batch.token_type_ids
    return Batch(ids, mask, lengths, types, batch.padding_side)


@contextlib.contextmanager
def sdpa_without_cudnn(device: torch.device) -> Iterator[None]:
    """On CUDA: SDPA may use flash, memory-efficient or math attention, never cuDNN (which builds
    a new graph per (batch, length) shape). Flash comes first where no explicit mask is needed;
    masked calls (a prefix cache) take the memory-efficient kernel. A no-op elsewhere.

    The backend flags are process-wide while the block runs (the engine serialises forward
    passes, so its own calls never see another setting)."""
    if device.type != "cuda":
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    allowed = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    priority = {"set_priority": True} if "set_priority" in inspect.signature(sdpa_kernel).parameters else {}
    with sdpa_kernel(allowed, **priority):
        yield


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

    ``buckets``: round each batch's padded (rows, width) up to a few buckets (see
    :func:`bucket_width`, :func:`bucket_rows`, within the token budget) so new queries reuse
    shapes; ``None`` (default): on CUDA only, for families whose attention runs SDPA kernels.
    On CUDA, SDPA never picks cuDNN attention (:func:`sdpa_without_cudnn`).
    """

    name = "torch"

    def __init__(self, prefix: str = "auto", buckets: bool | None = None) -> None:
        if prefix not in ("auto", "query", "common", "off"):
            raise ValueError(f"prefix must be 'auto', 'query', 'common' or 'off', got {prefix!r}")
        self.prefix = prefix
        self.buckets = buckets

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
        device = engine.device
        buckets = self.buckets
        if buckets is None:
            buckets = device.type == "cuda" and engine.family.attention_kernels
        scores = torch.empty(len(encoded), dtype=torch.float32, device=device)
        with sdpa_without_cudnn(device):
            for group, rows in tqdm(plans, desc="Ranking", unit="batch", disable=not show_progress):
                types = None if group.token_type_ids is None else [group.token_type_ids[r] for r in rows]
                batch = collate([group.sequences[r] for r in rows], engine.pad_token_id, types)
                if buckets:
                    batch = self._bucketed(batch, group.prefix_length, max_batch_tokens, engine.pad_token_id)
                index = torch.tensor([group.members[r] for r in rows], device=device)
                scores[index] = self._score_batch(engine, batch.to(device), group.prefix)[: len(rows)]
        return scores.cpu().numpy()  # one synchronisation per call

    def _score_batch(self, engine: ScoringEngine, batch: Batch, prefix: Any | None) -> torch.Tensor:
        """(B,) raw scores of one right-padded batch after its group's prefix (a subclass hook)."""
        return engine.head(batch, prefix)

    @staticmethod
    def _bucketed(batch: Batch, context: int, max_tokens: int, pad_id: int) -> Batch:
        """``batch`` padded up to its shape bucket where that stays within the token budget."""
        rows, width = batch.input_ids.shape
        fits = [(r, w) for r, w in ((bucket_rows(rows), bucket_width(width)), (rows, bucket_width(width)))
                if r * (w + context) <= max_tokens]  # fmt: skip
        return pad_to(batch, *fits[0], pad_id) if fits else batch


# name -> "module:factory" inside this package's ``_engine``, imported only when that backend
# is asked for, so an optional backend's extra (onnxruntime...) is needed only by its users.
BACKENDS: dict[str, str] = {
    "torch": "_backends:PaddedBackend",
    "packed": "_packed:PackedBackend",  # varlen-packed sequences, no padding (GPU path)
    "onnx": "_onnx:OnnxBackend",  # an exported ONNX graph through ONNX Runtime
    "int8": "_int8:Int8Backend",  # per-token int8 matrix products on the CPU (PyTorch, oneDNN)
    "onnx-int8": "_int8:OnnxInt8Backend",  # an int8-quantized ONNX graph through ONNX Runtime
}


def get_backend(
    backend: str | Backend | None, device: torch.device | None = None, dtype: torch.dtype | None = None
) -> Backend:
    """The backend named (or given); ``None``: the default for ``device`` and ``dtype``.

    Default: ``packed`` on CUDA where a varlen attention kernel runs in ``dtype`` (flash_attn or
    torch's varlen_attn; half precision, sm80+), created with ``auto=True`` so it runs padded
    whenever the model later sits where no kernel serves; ``torch`` (padded, with prefix reuse)
    everywhere else, CPUs included.
    """
    if backend is None:
        if device is not None and device.type == "cuda":
            from ._attention import varlen_kernel

            if varlen_kernel(device, dtype or torch.bfloat16) is not None:
                from ._packed import PackedBackend

                return PackedBackend(auto=True)
        backend = "torch"
    if not isinstance(backend, str):
        return backend
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; available: {', '.join(sorted(BACKENDS))}")
    module, attr = BACKENDS[backend].split(":")
    factory: Callable[[], Backend] = getattr(importlib.import_module(f"{__package__}.{module}"), attr)
    return factory()
