"""The packed backend: every pair of a call back to back in one row, no padding (the GPU path).

Per chunk (a forward pass)::

    input_ids, position_ids   (1, T)     T = real tokens of the chunk's sequences, no pads
    cu_seqlens                (B + 1,)   int32 offsets; sequence b = tokens cu[b]:cu[b + 1]
    max_length                int        longest sequence of the chunk (host side)

The model's attention is switched to the varlen ``mxbai_packed`` implementation
(:mod:`._attention`), so each token attends causally within its own sequence; the head gathers
each sequence's last hidden state and projects it (:meth:`~.._heads.AnswerTokenHead.forward_packed`).

Memory budget: chunks hold at most ``max_batch_tokens`` real tokens (and ``batch_size``
sequences); a sequence longer than the budget runs alone. Attention memory is O(T) with the
varlen kernels, so an 8k-32k document needs no other path.

No device sync inside a call: chunks are built on the host (pinned memory, non-blocking copies)
while the device still runs the previous chunk, scores stay on the device, and the call ends
with one copy to the host. The packed path does not reuse shared prefixes (a prefix cache needs
masked non-causal attention, which costs more on a GPU than it saves).

Heads that cannot pack (``head.packs`` false: v1's DeBERTa) and models whose attention could not
be switched run through :class:`~._backends.PaddedBackend`; so does an automatically chosen
packed backend (``auto=True``, the CUDA default) whenever no varlen kernel serves the model's
current device and dtype (CPUs, float32, pre-sm80 GPUs), since there the padded path with prefix
reuse is faster than the reference attention.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .._encoding import EncodedPairs
from ._attention import PACKED_ATTENTION, packed_call, register_packed_attention, varlen_kernel
from ._backends import PaddedBackend

if TYPE_CHECKING:
    from ..families import RerankerFamily
    from . import ScoringEngine

__all__ = ["PackedBackend", "PackedChunk", "build_chunk", "plan_chunks"]

logger = logging.getLogger(__name__)


def plan_chunks(lengths: Sequence[int], *, max_tokens: int, max_sequences: int) -> list[list[int]]:
    """Split indices, in input order, into chunks of at most ``max_tokens`` real tokens and
    ``max_sequences`` sequences; a sequence longer than ``max_tokens`` forms a chunk alone.

    Invariants: every index appears exactly once, in increasing order across the chunks.
    """
    if max_tokens <= 0 or max_sequences <= 0:
        raise ValueError("max_tokens and max_sequences must be positive")
    chunks: list[list[int]] = []
    current: list[int] = []
    tokens = 0
    for i, n in enumerate(lengths):
        if current and (tokens + n > max_tokens or len(current) >= max_sequences):
            chunks.append(current)
            current, tokens = [], 0
        current.append(i)
        tokens += n
    if current:
        chunks.append(current)
    return chunks


@dataclass
class PackedChunk:
    """One packed forward pass, on the host or on the device (see the module docstring)."""

    input_ids: torch.Tensor  # (1, T) int64
    position_ids: torch.Tensor  # (1, T) int64
    cu_seqlens: torch.Tensor  # (B + 1,) int32
    rows: torch.Tensor  # (B,) int64: each sequence's index in the call
    cu_host: list[int]  # cu_seqlens on the host
    max_length: int

    def to(self, device: torch.device) -> PackedChunk:
        """Non-blocking copies (from pinned memory on CUDA: the host runs ahead of the device)."""
        if device.type == "cuda":
            tensors = [t.pin_memory() for t in (self.input_ids, self.position_ids, self.cu_seqlens, self.rows)]
        else:
            tensors = [self.input_ids, self.position_ids, self.cu_seqlens, self.rows]
        ids, pos, cu, rows = (t.to(device, non_blocking=True) for t in tensors)
        return PackedChunk(ids, pos, cu, rows, self.cu_host, self.max_length)


def build_chunk(sequences: Sequence[Sequence[int]], rows: Sequence[int]) -> PackedChunk:
    """The host tensors of ``sequences[r] for r in rows``, packed in that order."""
    lengths = np.fromiter((len(sequences[r]) for r in rows), dtype=np.int64, count=len(rows))
    if lengths.size == 0 or lengths.min() <= 0:
        raise ValueError("every packed sequence needs at least one token")
    cu = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=cu[1:])
    total = int(cu[-1])
    ids = np.fromiter((tok for r in rows for tok in sequences[r]), dtype=np.int64, count=total)
    # Positions restart at 0 per sequence: arange(T) minus each token's sequence start.
    positions = np.arange(total, dtype=np.int64) - np.repeat(cu[:-1], lengths)
    return PackedChunk(
        input_ids=torch.from_numpy(ids).unsqueeze(0),
        position_ids=torch.from_numpy(positions).unsqueeze(0),
        cu_seqlens=torch.from_numpy(cu.astype(np.int32)),
        rows=torch.as_tensor(list(rows), dtype=torch.long),
        cu_host=cu.tolist(),
        max_length=int(lengths.max()),
    )


class PackedBackend:
    """Variable-length packed forward passes (see the module docstring).

    ``auto``: chosen by default rather than asked for; then calls with no varlen kernel for the
    model's current device and dtype run padded (with prefix reuse) instead of through the
    reference attention. ``backend="packed"`` (``auto=False``) always packs where the head can,
    through the reference attention where no kernel serves (tests, CPUs on request).
    """

    name = "packed"

    def __init__(self, auto: bool = False) -> None:
        self.auto = auto
        self._padded = PaddedBackend()
        # Models seen calling the packed attention in an eager packed call.
        self._routed: weakref.WeakSet[torch.nn.Module] = weakref.WeakSet()

    def model_kwargs(self, device: torch.device, dtype: torch.dtype, family: RerankerFamily) -> dict[str, Any]:
        # SDPA at load: the packed attention hands every non-packed call to SDPA with its masks.
        return {"attn_implementation": "sdpa"} if family.attention_kernels else {}

    def prepare(self, engine: ScoringEngine) -> None:
        self._padded.prepare(engine)
        reason = _cannot_pack(engine)
        if reason is not None:
            logger.info("%s: scoring padded, not packed: %s", engine.model_id, reason)
            return
        name = register_packed_attention()
        engine.model.set_attn_implementation(name)  # type: ignore[operator]
        if getattr(engine.model.config, "_attn_implementation", None) != name:
            logger.warning("%s: the model refused the packed attention; scoring padded", engine.model_id)

    def compile(self, engine: ScoringEngine) -> None:
        """``torch.compile(dynamic=True)`` every decoder layer, then compile them on warm-up calls.

        Measured on an H200 (base shape, bf16, ``bench_gpu_breakdown.py``): device time of a cold
        top-100 query 56.8 -> 36-37 ms, pre-tokenized throughput 28.6% -> 41-42% of bf16 peak, for
        10-20 s of compiling at load (loads took 25 s in the first process on the machine, 17 s
        once inductor's on-disk cache was warm, against 5 s eagerly); later calls of new lengths
        reuse the graphs (``dynamic=True``). Each layer is one graph holding the packed attention
        as an operator (see ``_attention.packed_attention_forward``), so the graphs take the packed
        offsets as inputs. Raises ``ValueError`` where calls would not run packed (nothing to gain,
        and the padded path's masks and caches would recompile).
        """
        if not self.packs(engine):
            reason = _cannot_pack(engine) or "no varlen kernel serves this device"
            raise ValueError(f"compile=True needs packed scoring (backend='packed'), and {reason}")
        layers = getattr(getattr(engine.head, "backbone", None), "layers", None)
        if not layers:
            raise ValueError(f"compile=True: {type(engine.model).__name__} has no decoder layers to compile")
        token = engine.pad_token_id
        # One eager call first: it proves the model routes its attention here (see launch), which
        # compiled layers, whose graphs hold the kernel, no longer report.
        engine.score(EncodedPairs([[token] * 3, [token] * 5]))
        for layer in layers:
            layer.compile(dynamic=True)
        # Calls of different shapes: the first compiles, the second proves the shapes are
        # dynamic, the third has a real call's size (inductor settles its kernels on it), so no
        # user call pays for compiling. Any token id serves; scores are dropped.
        try:
            for lengths in ((5, 9), (3, 4, 6), (160,) * 64):
                engine.score(EncodedPairs([[token] * n for n in lengths]))
        except BaseException:
            for layer in layers:  # back to eager: a half-compiled model would retry on every call
                layer._compiled_call_impl = None
            raise
        logger.info("%s: %d decoder layers compiled (dynamic shapes)", engine.model_id, len(layers))

    def compile_pays(self, engine: ScoringEngine) -> bool:
        """Whether ``compile=None`` (the default) compiles: calls on ``engine`` run packed on CUDA
        through a varlen kernel (not the reference attention, which compiling does not speed up)."""
        return self.streams(engine) and varlen_kernel(engine.device, engine.dtype) is not None

    def streams(self, engine: ScoringEngine) -> bool:
        """Whether :meth:`launch` returns before the device finishes (packed calls on CUDA), so the
        engine may tokenize the next slice meanwhile (:meth:`~.ScoringEngine.encode_and_score`)."""
        return engine.device.type == "cuda" and self.packs(engine)

    def packs(self, engine: ScoringEngine) -> bool:
        """Whether calls on ``engine`` run packed now (as opposed to through the padded backend)."""
        if not getattr(engine.head, "packs", False):
            return False
        if getattr(engine.model.config, "_attn_implementation", None) != PACKED_ATTENTION:
            return False
        return not (self.auto and varlen_kernel(engine.device, engine.dtype) is None)

    def run(
        self,
        engine: ScoringEngine,
        encoded: EncodedPairs,
        *,
        max_batch_tokens: int,
        batch_size: int,
        show_progress: bool,
    ) -> np.ndarray:
        if not self.packs(engine):
            return self._padded.run(
                engine, encoded, max_batch_tokens=max_batch_tokens, batch_size=batch_size, show_progress=show_progress
            )
        scores = self.launch(
            engine, encoded, max_batch_tokens=max_batch_tokens, batch_size=batch_size, show_progress=show_progress
        )
        return scores.cpu().numpy()  # the one synchronisation of the call

    def launch(
        self,
        engine: ScoringEngine,
        encoded: EncodedPairs,
        *,
        max_batch_tokens: int,
        batch_size: int,
        show_progress: bool = False,
    ) -> torch.Tensor:
        """Enqueue the packed forward passes of ``encoded``: (N,) float32 scores on the model's
        device, in input order, not waited for. The caller holds inference mode (and, in the
        engine, the forward lock); :meth:`run` adds the one copy to the host."""
        device = engine.device
        sequences = encoded.input_ids
        chunks = plan_chunks([len(s) for s in sequences], max_tokens=max_batch_tokens, max_sequences=batch_size)
        scores = torch.empty(len(encoded), dtype=torch.float32, device=device)
        head: Any = engine.head
        for rows in tqdm(chunks, desc="Ranking", unit="pass", disable=not show_progress):
            # Host work for this chunk overlaps the device's work on the previous one: nothing
            # below waits for the device.
            chunk = build_chunk(sequences, rows).to(device)
            with packed_call(chunk.cu_seqlens, chunk.cu_host, chunk.max_length) as call:
                out = head.forward_packed(chunk.input_ids, chunk.position_ids, chunk.cu_seqlens, chunk.max_length)
            if call.layers:
                self._routed.add(engine.model)
            elif engine.model not in self._routed:  # compiled layers report nothing: checked before
                raise RuntimeError(
                    f"{type(engine.model).__name__} never called the {PACKED_ATTENTION!r} attention, so its "
                    "sequences would attend to each other; use backend='torch' for this model"
                )
            scores[chunk.rows] = out  # (B,)
        return scores


def _cannot_pack(engine: ScoringEngine) -> str | None:
    """Why ``engine`` cannot run packed, or None."""
    if not getattr(engine.head, "packs", False):
        return f"{type(engine.head).__name__} cannot pack (head.packs is false)"
    if not engine.family.attention_kernels:
        return f"family {engine.family.name!r} has no attention kernels to replace"
    config = engine.model.config
    layer_types = getattr(config, "layer_types", None) or ()
    if getattr(config, "use_sliding_window", False) or "sliding_attention" in layer_types:
        return "sliding-window attention layers are not packed"
    can_set = getattr(engine.model, "_can_set_attn_implementation", None)
    if can_set is None or not can_set():
        return f"{type(engine.model).__name__} cannot switch its attention implementation"
    return None
