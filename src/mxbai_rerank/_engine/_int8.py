"""int8 CPU backends: ``int8`` (PyTorch, per-token W8A8) and ``onnx-int8`` (ONNX Runtime).

``int8`` (:class:`Int8Backend`) keeps the default backend's batching and shared-prefix reuse and
swaps the matrix products of the transformer blocks for int8 ones (oneDNN's ``qlinear``, with
VNNI / AMX-INT8 kernels where the CPU has them). Each ``nn.Linear`` of block 1 onwards becomes
an :class:`Int8Linear`:

* weights: int8 per output channel, symmetric, ``w_scale[n] = max_k |W[n, k]| / 127``, prepacked
  once for oneDNN (63 instead of 127 on CPUs whose int8 kernels would saturate: :func:`weight_qmax`);
* activations: int8 per token (per row), at run time, ``x_scale[m] = max_k |x[m, k]| / 127``,
  passed to oneDNN as uint8 with zero point 128 (see :func:`_int8_matmul`);
* ``y[m, n] = x_scale[m] * w_scale[n] * sum_k qx[m, k] * qw[n, k]``, summed exactly in int32.

Why per token: one row's quantization never depends on the other rows of its batch, so a
pair's score does not change with what it is batched with (ONNX Runtime's dynamic quantization
scales a whole activation tensor at once: one long or unusual row coarsens every other row), and
the error stays at a row's own resolution. That is what keeps the ranking (the quality table in
the README). oneDNN only takes one activation scale per call, so the per-row scale is applied
after the int32 product; both steps around the product are fused by ``torch.compile`` (one
pass to quantize, one to rescale).

Refined rows: in v2 prompts the positions after the document (separator, task prompt, chat
suffix) hold the same tokens for every document, and the score is read at the last of them; the
document reaches them only as small differences in their activations, smaller than one step of a
per-token 7-bit scale. :class:`Int8Backend` therefore gives those rows a second int8 term (the
first rounding's remainder, quantized again: about 15-bit activations, see :func:`_product`),
which costs one more int8 product over about a third of the rows. The weights stay int8. It is
opt-in (``Int8Backend(exact_tail=None)``; see there for what it measured).

The first block stays in the engine's dtype: on the v2 fixture, keeping it raised the lowest
Kendall's tau against float32 from 0.94 to 0.98 (more than keeping any one kind of projection in
every block), and it is 1/24 of the 0.5B model's work. With bf16 around the products the first
third of the blocks stay (:func:`default_skip_first`). An unquantized block's MLP runs over at
most 512 rows at a time (:class:`RowChunkedMLP`), and the backend trims the C heap after every
batch: both keep the resident peak down (README, "Speed, memory, and where int8 is the
default").
Embeddings, norms, attention and the score head also stay in that dtype (bf16 where the CPU has
native bf16, else float32).

``onnx-int8`` (:class:`OnnxInt8Backend`) runs the graph that ``mxbai-rerank convert --to onnx
--quantize int8`` writes (int8 weights, activations quantized per tensor): a folder written by
that command is loaded as it is, any other checkpoint is exported and quantized once into the
cache (see :mod:`._onnx`); the serving process never holds the torch model when the graph exists.

:class:`TorchAoInt8Backend` keeps ``torch.ao``'s dynamic quantization runnable for comparison
(``backend=TorchAoInt8Backend()``, not registered by name): on the 0.5B shape it was about ten
times slower than either.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import logging
import mmap
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from .._batching import Batch
from ._backends import PaddedBackend
from ._onnx import OnnxBackend

if TYPE_CHECKING:
    from ..families import RerankerFamily
    from . import ScoringEngine

__all__ = [
    "ExactRows",
    "Int8Backend",
    "Int8GatedMLP",
    "Int8Linear",
    "OnnxInt8Backend",
    "RowChunkedMLP",
    "TorchAoInt8Backend",
    "default_skip_first",
    "quantize_blocks",
    "tail_rows",
    "weight_qmax",
]

logger = logging.getLogger(__name__)

_QMAX = 127.0
_ZERO_POINT = 128  # activations travel as uint8 q + 128 (see _int8_matmul)

# madvise(2), to release the pages of quantized float weights (Linux only; see _release_pages).
_LIBC = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True) if sys.platform == "linux" else None
_PAGE = mmap.PAGESIZE
_MADV_DONTNEED = 4


@torch.library.custom_op("mxbai_rerank::int8_matmul", mutates_args=())
def _int8_matmul(
    qx: torch.Tensor, packed: torch.Tensor, w_scale: torch.Tensor, w_zero: torch.Tensor, out_dtype: torch.dtype
) -> torch.Tensor:
    """(M, K) uint8 (``qx + 128``) x prepacked (K -> N) int8 weight -> (M, N)
    ``w_scale[n] * sum_k qx * qw`` in ``out_dtype``.

    Activations go in as unsigned bytes with zero point 128: oneDNN's kernels are built for
    u8 x s8 (VNNI's ``vpdpbusd``, AVX2's ``vpmaddubsw``). With signed activations oneDNN picks
    its reference kernel on every ISA but plain AVX2 and AMX (AVX2 + AVX-VNNI laptop chips since
    Alder Lake, AVX-512 servers without AMX), measured thousands of times slower; u8 runs in its
    jit kernels everywhere (2.5-3x float32 under AVX2 + AVX-VNNI) and as fast as s8 on AMX.

    Half-precision output is written by the kernel only where its jit kernels can
    (:func:`_half_output`); elsewhere the product is float32 and cast after.

    Opaque to ``torch.compile`` (a custom op), so inductor fuses the steps around it and calls
    oneDNN for the product itself."""
    direct = out_dtype == torch.float32 or _half_output()
    y = torch.ops.onednn.qlinear_pointwise(
        qx,
        1.0,
        _ZERO_POINT,
        packed,
        w_scale,
        w_zero,
        None,
        1.0,
        0,
        out_dtype if direct else torch.float32,
        "none",
        [],
        "",
    )
    return y if direct else y.to(out_dtype)


@_int8_matmul.register_fake
def _(
    qx: torch.Tensor, packed: torch.Tensor, w_scale: torch.Tensor, w_zero: torch.Tensor, out_dtype: torch.dtype
) -> torch.Tensor:
    return qx.new_empty((qx.shape[0], w_scale.shape[0]), dtype=out_dtype)


@functools.cache
def _half_output() -> bool:
    """Whether oneDNN's int8 kernels write bf16 / float16 themselves: on AVX-512 and AMX. On AVX2
    CPUs (and under ``ONEDNN_MAX_CPU_ISA=AVX2...``, which emulates one) a half-precision output
    sends the product to oneDNN's reference kernel, thousands of times slower."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    return bool(torch.cpu._is_avx512_supported()) and not cap.startswith(("SSE", "AVX2", "AVX_"))


@functools.cache
def weight_qmax() -> float:
    """The largest int8 weight magnitude this CPU's oneDNN kernels multiply exactly: 127, or 63.

    Without VNNI / AMX-INT8 (AVX2 only), oneDNN multiplies int8 with ``vpmaddubsw``, which adds
    two u8 x s8 products into a saturating int16: activations shifted to u8 (up to 255) times
    weights near 127 overflow it, and the product is silently wrong. Weights of at most 63 never
    do (255 * 63 * 2 < 32768). Decided once per process by a probe product built to overflow."""
    k = 64
    qx = torch.full((2, k), 255, dtype=torch.uint8)  # +127 (zero point 128)
    qx[1, ::2] = 1  # -127
    qw = torch.full((2, k), 127, dtype=torch.int8)
    qw[1, ::3] = -127
    packed = torch.ops.onednn.qlinear_prepack(qw, None)
    got = _int8_matmul(qx, packed, torch.ones(2), torch.zeros(2, dtype=torch.long), torch.float32)
    if torch.equal(got.double(), (qx.double() - _ZERO_POINT) @ qw.double().T):
        return _QMAX
    logger.info("int8: this CPU's int8 kernels saturate (no VNNI); weights use 7 bits (-63..63)")
    return 63.0


class _Weight:
    """One int8 weight, ready for :func:`_int8_matmul` (see the module docstring)."""

    def __init__(self, weight: torch.Tensor) -> None:
        weight = weight.detach().float()  # (N, K)
        self.scale = weight.abs().amax(dim=1).clamp_min(1e-12) / weight_qmax()  # (N,) float32
        self.zero = torch.zeros_like(self.scale, dtype=torch.long)
        # oneDNN's blocked layout: an opaque tensor that cannot be moved, saved or trained.
        self.packed = torch.ops.onednn.qlinear_prepack(torch.round(weight / self.scale[:, None]).to(torch.int8), None)
        self.out_features, self.in_features = weight.shape

    def args(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.packed, self.scale, self.zero


def _quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, K) float -> (M, K) uint8 ``q + 128`` (q in -127..127) and (M, 1) float32 scales, so
    that ``x ~ (qx - 128) * scale``; an all-zero row gets q = 0."""
    xf = x.float()
    scale = xf.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12) / _QMAX
    return (torch.round(xf / scale) + _ZERO_POINT).to(torch.uint8), scale  # |xf / scale| <= 127 by construction


def _product(
    x: torch.Tensor,
    weight: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    rows: torch.Tensor | None,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """(M, K) float -> (M, N) float32: ``x @ W.T`` with x quantized per row, the int8 product in
    ``out_dtype``; ``rows`` (R,) int64, if given: those rows get a second int8 term, the product
    of what the first quantization left over (``x - qx * scale``, quantized per row again), so
    their activations carry about 15 bits instead of 7 at the cost of R more rows of int8
    product; the weights stay int8."""
    qx, scale = _quantize_rows(x)
    if rows is None:
        return _int8_matmul(qx, *weight, out_dtype).float() * scale
    first = (qx.index_select(0, rows).float() - _ZERO_POINT) * scale.index_select(0, rows)
    rest = x.float().index_select(0, rows) - first
    q_rest, rest_scale = _quantize_rows(rest)
    # One product over both terms' rows ((M + R, K) uint8). The second term is gathered, not
    # scattered (a scatter-add compiles to a serial loop): row i reads its refinement's slot,
    # or an appended zero row.
    y = _int8_matmul(torch.cat([qx, q_rest]), *weight, out_dtype).float()  # (M + R, N)
    m, r = qx.shape[0], rows.shape[0]
    second = torch.cat([y[m:] * rest_scale, y.new_zeros(1, y.shape[1])])  # (R + 1, N)
    slot = torch.full((m,), r, dtype=rows.dtype, device=rows.device).index_put((rows,), torch.arange(r))
    return y[:m] * scale + second[slot]


def _linear_eager(
    x: torch.Tensor,
    packed: torch.Tensor,
    w_scale: torch.Tensor,
    w_zero: torch.Tensor,
    bias: torch.Tensor | None,
    rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """(M, K) -> (M, N) in x's dtype: ``x @ W.T + bias`` through per-row int8; ``rows``: refined
    rows (:func:`_product`)."""
    y = _product(x, (packed, w_scale, w_zero), rows, x.dtype)
    if bias is not None:
        y = y + bias
    return y.to(x.dtype)


def _gated_mlp_eager(
    x: torch.Tensor,
    gate_up: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    down: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """(M, H) -> (M, H): ``down(silu(gate(x)) * up(x))`` with one int8 product for gate and up
    (their weights stacked: (2I, H)), the activation fused with the next quantization;
    ``rows`` as in :func:`_linear_eager`, for both products."""
    gate, up = _product(x, gate_up, rows, x.dtype).chunk(2, dim=-1)  # (M, I) each
    return _product(torch.nn.functional.silu(gate) * up, down, rows, x.dtype).to(x.dtype)


def _rms_norm_eager(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Qwen2's RMSNorm, step for step (float32 statistics, scaled in x's dtype)."""
    xf = x.float()
    normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * normed.to(x.dtype)


class _Kernels:
    """The process-wide int8 functions: compiled once (dynamic shapes), or eager."""

    linear: Callable[..., torch.Tensor] = _linear_eager
    gated_mlp: Callable[..., torch.Tensor] = _gated_mlp_eager
    rms_norm: Callable[..., torch.Tensor] = _rms_norm_eager
    compiled: bool = False
    warmed: ClassVar[set[torch.dtype]] = set()

    @classmethod
    def compile(cls, dtype: torch.dtype = torch.float32) -> bool:
        """Compile the kernels (once per process) and warm them up for activations of ``dtype``
        (once per dtype); on failure stay eager, say why, and return False."""
        if dtype in cls.warmed:
            return True
        eager = (_linear_eager, _gated_mlp_eager, _rms_norm_eager)
        if cls.warmed:  # compiled already: warm the same functions for one more dtype
            kernels = (cls.linear, cls.gated_mlp, cls.rms_norm)
        else:
            kernels = tuple(torch.compile(f, dynamic=True) for f in eager)
        try:
            # Warmed as the engine calls them: a call that misses every graph compiles again,
            # and past dynamo's recompile limit (8 per function) runs eager code from then on.
            cls._warm_up(dtype, *kernels)
        except Exception as exc:  # inductor needs a C++ compiler; eager gives the same numbers, slower
            logger.warning("int8: torch.compile failed (%s: %s); quantizing eagerly (slower)", type(exc).__name__, exc)
            # Half-warmed graphs would compile on engine calls: every engine eager from now on.
            kernels = eager
            cls.warmed.clear()
        else:
            cls.warmed.add(dtype)
        cls.linear, cls.gated_mlp, cls.rms_norm = kernels
        cls.compiled = bool(cls.warmed)
        return cls.compiled

    @staticmethod
    def _warm_up(
        dtype: torch.dtype,
        linear: Callable[..., torch.Tensor],
        gated_mlp: Callable[..., torch.Tensor],
        rms_norm: Callable[..., torch.Tensor],
    ) -> None:
        """Call each kernel in every variant an engine calls with ``dtype`` activations, as an
        engine calls it, so that no engine call compiles:
        - weights made outside inference mode, activations inside it (dynamo guards on a
          tensor's dispatch keys, which differ);
        - refined rows or not (the int8 modules always pass a bias, zeros where the layer has
          none): 2 graphs of the linear and of the MLP per dtype, so 4 dtypes stay within the
          limit of 8;
        - two row counts each, so the first graphs are the dynamic ones every later call reuses;
        - sizes all different (dynamo guards on sizes it sees equal) and large enough that
          inductor parallelizes the fused loops (it decides from these sizes: below
          ``cpp.min_chunk_size`` elements it emits single-threaded loops, for every later size).
        """
        hidden, inner, out = 128, 192, 96
        weight, down = _Weight(torch.ones(out, hidden)), _Weight(torch.ones(hidden, inner))
        stacked, bias = _Weight(torch.ones(2 * inner, hidden)), torch.zeros(out)
        norm = torch.ones(hidden, dtype=dtype)
        with torch.inference_mode():
            for rows in (64, 80):
                x = torch.randn(rows, hidden).to(dtype)
                for exact in (None, torch.arange(rows // 2)):
                    linear(x, *weight.args(), bias, exact)
                    gated_mlp(x, stacked.args(), down.args(), exact)
                rms_norm(x, norm, 1e-6)


class ExactRows:
    """Which rows of the current forward pass get a second int8 term (see :func:`_product`).

    One per quantized model, shared by its int8 modules; ``rows`` is set by
    :class:`Int8Backend` around each batch (flat indices into the batch's (B * T) positions)
    and is None otherwise (prefix passes, direct calls of the model)."""

    def __init__(self) -> None:
        self.rows: torch.Tensor | None = None


class Int8Linear(nn.Module):
    """An inference-only ``nn.Linear`` with int8 weights (per channel) and int8 activations (per token)."""

    def __init__(self, linear: nn.Linear, exact: ExactRows | None = None) -> None:
        super().__init__()
        self.exact = exact or ExactRows()
        self.weight8 = _Weight(linear.weight)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        # Zeros where the layer has none: one compiled graph serves both (see _Kernels._warm_up).
        bias = torch.zeros(linear.out_features) if linear.bias is None else linear.bias.detach().float()
        self.register_buffer("bias", bias)
        self.has_bias = linear.bias is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _Kernels.linear(x.reshape(-1, self.in_features), *self.weight8.args(), self.bias, self.exact.rows)
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.has_bias}"


class Int8GatedMLP(nn.Module):
    """A SwiGLU MLP (``down(silu(gate(x)) * up(x))``, no biases: Qwen2's) in int8, gate and up in one product."""

    def __init__(self, mlp: nn.Module, exact: ExactRows | None = None) -> None:
        super().__init__()
        self.exact = exact or ExactRows()
        self.gate_up = _Weight(torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]))  # (2I, H)
        self.down = _Weight(mlp.down_proj.weight)  # (H, I)
        self.hidden = mlp.down_proj.out_features
        self.chunk_rows = 1024

    @staticmethod
    def fits(module: nn.Module) -> bool:
        parts = [getattr(module, name, None) for name in ("gate_proj", "up_proj", "down_proj")]
        return all(type(p) is nn.Linear and p.bias is None for p in parts) and type(
            getattr(module, "act_fn", None)
        ).__name__ in ("SiLU", "SiLUActivation")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.hidden)  # (M, H)
        rows = self.exact.rows
        if rows is not None:  # refined rows index the whole pass: not chunked
            return _Kernels.gated_mlp(flat, self.gate_up.args(), self.down.args(), rows).reshape(x.shape)
        # The (rows, 2I) product is the largest transient of a forward pass (8,192 rows of the
        # 0.5B shape: 320 MB in float32). Rows are quantized and multiplied independently, so
        # chunking changes no number.
        gate_up, down = self.gate_up.args(), self.down.args()
        return _in_row_chunks(
            lambda part: _Kernels.gated_mlp(part, gate_up, down, None), flat, self.chunk_rows
        ).reshape(x.shape)


def _in_row_chunks(fn: Callable[[torch.Tensor], torch.Tensor], flat: torch.Tensor, chunk_rows: int) -> torch.Tensor:
    """``fn`` of (M, H) rows -> (M, H), applied to at most ``chunk_rows`` rows at a time, in chunks
    of near-equal size (never 1 row, which a compiled graph would specialize on); for functions
    of each row alone (an MLP), so that only one chunk's intermediates are alive at once."""
    if flat.shape[0] <= chunk_rows:
        return fn(flat)
    size = -(-flat.shape[0] // -(-flat.shape[0] // chunk_rows))
    out = torch.empty_like(flat)
    for start in range(0, flat.shape[0], size):
        part = flat[start : start + size]
        out[start : start + part.shape[0]] = fn(part)
    return out


class RowChunkedMLP(nn.Module):
    """An unquantized block's MLP run over at most ``chunk_rows`` rows at a time (see
    :func:`_in_row_chunks`). In the blocks ``skip_first`` keeps in the engine's dtype, the MLP's
    three (rows, I) intermediates were the largest transient of a pass: 2,048 rows of the 0.5B
    shape in float32 hold about 120 MB at once, 512 rows about 30 MB."""

    def __init__(self, mlp: nn.Module, chunk_rows: int = 512) -> None:
        super().__init__()
        self.mlp = mlp
        self.chunk_rows = chunk_rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _in_row_chunks(self.mlp, x.reshape(-1, x.shape[-1]), self.chunk_rows).reshape(x.shape)


class FusedRMSNorm(nn.Module):
    """Qwen2's RMSNorm as one fused kernel (the same arithmetic; compiled with the int8 kernels)."""

    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        # A buffer, not a Parameter: a plain tensor, as the compiled kernel was warmed with.
        self.register_buffer("weight", norm.weight.detach())
        self.eps = float(norm.variance_epsilon)

    @staticmethod
    def fits(module: nn.Module) -> bool:
        return type(module).__name__ == "Qwen2RMSNorm" and hasattr(module, "variance_epsilon")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (..., H) as (M, H): one dynamic graph for every batch shape
        return _Kernels.rms_norm(x.reshape(-1, x.shape[-1]), self.weight, self.eps).reshape(x.shape)


def _blocks(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks of a transformers model (decoder layers or encoder layers)."""
    base = getattr(model, "base_model", model)
    for path in ("layers", "encoder.layer", "model.layers"):
        found: Any = base
        for part in path.split("."):
            found = getattr(found, part, None)
        if isinstance(found, nn.ModuleList) and len(found):
            return found
    raise ValueError(f"int8: found no transformer blocks in {type(model).__name__}")


def quantize_blocks(model: nn.Module, skip_first: int = 1, exact: ExactRows | None = None) -> int:
    """In the blocks after the first ``skip_first``, in place: a SwiGLU MLP becomes an
    :class:`Int8GatedMLP`, every other ``nn.Linear`` an :class:`Int8Linear`, and Qwen2's RMSNorm a
    :class:`FusedRMSNorm`; returns how many linear layers are now int8. In the first
    ``skip_first`` blocks a SwiGLU MLP stays as it is inside a :class:`RowChunkedMLP`. Layers
    outside the blocks (embeddings, the score head, a classifier) are left as they are.
    ``exact``: the rows the int8 modules refine (none by default)."""
    replaced = 0
    for index, block in enumerate(_blocks(model)):
        quantize = index >= skip_first
        for parent in list(block.modules()):
            for name, child in list(parent.named_children()):
                if not quantize:
                    if Int8GatedMLP.fits(child):
                        setattr(parent, name, RowChunkedMLP(child))
                    continue
                if FusedRMSNorm.fits(child):
                    setattr(parent, name, FusedRMSNorm(child))
                    continue
                if Int8GatedMLP.fits(child):
                    setattr(parent, name, Int8GatedMLP(child, exact))
                    replaced += 3
                elif type(child) is nn.Linear:
                    setattr(parent, name, Int8Linear(child, exact))
                    replaced += 1
                else:
                    continue
                for param in child.parameters():  # quantized: the float copy is garbage now
                    _release_pages(param.data)
        if quantize:
            _trim_heap()
    gc.collect()
    _trim_heap()
    return replaced


def _trim_heap() -> None:
    """Hand the C heap's free pages back to the OS (glibc's ``malloc_trim``; elsewhere nothing).

    Quantizing a block frees float temporaries of 2-35 MB; once glibc has freed one such
    mmapped chunk it serves the next ones from its heap arenas, which keep freed memory, so
    without this the peak after loading varied by 150-250 MB between identical processes
    (0.5B shape: 1209-1470 MB; trimmed after every block it stays at one block's worth)."""
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)


def _release_pages(tensor: torch.Tensor) -> None:
    """Give the pages of a tensor that will never be read again back to the OS (Linux).

    The checkpoint's tensors are views of one memory-mapped file, which stays mapped, and every
    page read stays resident, while any view lives (the embeddings do): without this, the float
    weights that were quantized would stay resident beside their int8 copies. Only whole pages
    inside the tensor's own bytes are released; a file-backed page is re-read if touched, an
    anonymous one reads as zeros, so the tensor must be garbage (its module is being replaced).
    """
    if _LIBC is None or tensor.device.type != "cpu" or not tensor.is_contiguous():
        return
    start, end = tensor.data_ptr(), tensor.data_ptr() + tensor.numel() * tensor.element_size()
    first, last = -(-start // _PAGE) * _PAGE, end // _PAGE * _PAGE
    if last > first:
        _LIBC.madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), _MADV_DONTNEED)


def _widen_except_embeddings(model: nn.Module, dtype: torch.dtype) -> None:
    """For a float32 engine: cast the model's bf16 and float16 tensors to float32 in place,
    except the token embeddings and an LM head (its rows are read two at a time, in float32, by
    the score head): those stay in the checkpoint's dtype, mostly never read (so never
    resident), and the embeddings' output is cast instead. Widening is exact (bf16 and float16
    values are float32 values), so the model computes what a model loaded in float32 computes.
    No-op for other dtypes and where everything is float32 already."""
    if dtype != torch.float32:
        return
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    keep = {id(p) for m in (embeddings, head) if isinstance(m, nn.Module) for p in m.parameters()}
    for module in model.modules():
        for tensor in [*module.parameters(recurse=False), *module.buffers(recurse=False)]:
            if id(tensor) not in keep and tensor.dtype in (torch.bfloat16, torch.float16):
                tensor.data = tensor.data.to(dtype)
    if isinstance(embeddings, nn.Module) and any(p.dtype != dtype for p in embeddings.parameters()):
        embeddings.register_forward_hook(lambda _module, _args, out: out.to(dtype))


def _check_kernels() -> None:
    """Raise ``ValueError`` unless this PyTorch has oneDNN's int8 linear kernels for this CPU."""
    if not torch.backends.mkldnn.is_available() or not hasattr(torch.ops.onednn, "qlinear_pointwise"):
        raise ValueError("the int8 backend needs PyTorch built with oneDNN (x86-64 CPUs); try backend='onnx-int8'")
    try:
        _linear_eager(torch.ones(1, 4), *_Weight(torch.ones(2, 4)).args(), None)
    except RuntimeError as exc:
        raise ValueError(f"the int8 backend cannot run oneDNN int8 kernels on this CPU: {exc}") from exc


def tail_rows(lengths: torch.Tensor, width: int, tail: int) -> torch.Tensor:
    """Flat indices into a right-padded (B, width) batch of each row's last ``tail`` real
    positions (all of a shorter row's); ``lengths``: (B,) int64 -> (R,) int64."""
    last = lengths[:, None] - tail + torch.arange(tail)  # (B, tail): positions, < 0 before a row's start
    flat = torch.arange(len(lengths))[:, None] * width + last
    return flat[last >= 0]


def default_skip_first(blocks: int, dtype: torch.dtype) -> int:
    """How many of a model's ``blocks`` leading transformer blocks :class:`Int8Backend` keeps in
    the engine's ``dtype`` when not told: the first third (at least one) with bf16 or float16
    around the int8 products, only the first with float32.

    Most of int8's score error starts in the early blocks and grows through the later ones.
    Measured on the 0.5B shape (24 blocks), bf16 around, 10 queries x 100 passages against
    float32: keeping 8 instead of 1 halved the score error (RMS 0.043 -> 0.025) and raised the
    lowest Kendall's tau from 0.936 to 0.964, at the same speed (within the noise of interleaved
    runs) and about 80 MB more resident (a bf16 block holds 2 bytes a weight, int8 1). A float32
    block holds 4 bytes a weight and runs at float32 speed, so keeping a third of them in float32
    would cost about 315 MB and, counting blocks, turn the 2.0x over float32 measured with AVX2 +
    VNNI into about 1.5x: float32 engines keep one (README, "Trading speed for ranking")."""
    if dtype in (torch.bfloat16, torch.float16):
        return max(1, blocks // 3)
    return 1


class Int8Backend(PaddedBackend):
    """Per-token W8A8 int8 matrix products on the CPU (see the module docstring).

    ``skip_first``: how many leading transformer blocks stay in the engine's dtype; ``None``
    (default): :func:`default_skip_first` (the first third with bf16 around the products, the
    first block with float32).
    ``exact_tail``: how many last positions of every sequence get a second int8 term in every
    int8 product (:func:`_product`); 0 (default): none; ``None``: the family's fixed prompt tail
    after the document (the separator, task prompt and chat suffix of v2 models, 55 tokens; 0
    for v1). Those positions hold the same tokens for every document, so the document reaches
    them only as small differences in their activations, which per-token rounding to 7 bits
    drowns. Measured on the 0.5B shape (4 queries x 100 passages against float32, bf16 around
    the products): lowest Kendall's tau 0.943 -> 0.966 with ``None`` (0.959 with 8 rows); on the
    v2 fixture (float32 around) 0.980 -> 0.987, but equal top-10 sets 9 -> 8 of 10 (near-ties at
    rank 10). Not the default: on the 0.5B shape it adds about 1.3 s to a 32-document query
    (about 3.8 -> 5.2 s; bf16 without int8: 4.4 s), most of it in the refined MLP's fused
    steps (README, "Trading speed for ranking").
    ``compile``: fuse the quantize and rescale steps with ``torch.compile`` (default; needs a
    C++ compiler, falls back to eager with a warning). The kernels are process-wide: once one
    int8 engine compiled them, every int8 engine in the process uses the compiled ones.
    """

    name = "int8"
    # Smaller batches than the CPU's default 8,192 tokens: as fast (0.5B shape, float32 around:
    # 5.96-5.99 s per 32-document call against 5.9-6.1) with a smaller transient (peak 1275 MB
    # against 1427-1461). The caller's max_batch_tokens still wins.
    default_max_batch_tokens: ClassVar[int] = 2048

    def __init__(
        self, prefix: str = "auto", skip_first: int | None = None, compile: bool = True, exact_tail: int | None = 0
    ) -> None:
        super().__init__(prefix=prefix, buckets=False)
        if skip_first is not None and skip_first < 0:
            raise ValueError(f"skip_first must be >= 0, got {skip_first!r}")
        if exact_tail is not None and exact_tail < 0:
            raise ValueError(f"exact_tail must be >= 0 or None, got {exact_tail!r}")
        self.skip_first = skip_first
        self.skipped = 0  # skip_first, resolved for the engine in prepare
        self.compile_kernel = compile
        self.exact_tail = exact_tail
        self.tail = 0  # exact_tail, resolved for the engine in prepare
        self.exact = ExactRows()
        self.quantized = 0
        self.compute_dtype: torch.dtype | None = None  # set by model_kwargs

    def model_kwargs(self, device: torch.device, dtype: torch.dtype, family: RerankerFamily) -> dict[str, Any]:
        kwargs = super().model_kwargs(device, dtype, family)
        self.compute_dtype = dtype  # the engine's dtype (ScoringEngine.dtype), whatever the weights'
        if dtype == torch.float32:
            # Loaded in the checkpoint's own dtype (views of the memory-mapped file, no copy) and
            # widened in prepare after quantizing: a float32 copy of the whole model would be
            # made only to be quantized (the 0.5B shape: 3.2 GB peak instead of about 1.3).
            kwargs["dtype"] = "auto"
        return kwargs

    def prepare(self, engine: ScoringEngine) -> None:
        if engine.device.type != "cpu":
            raise ValueError(f"the {self.name} backend runs on the CPU, not on {engine.device}")
        _check_kernels()
        default_tail = len(getattr(engine.encoder, "tail_ids", ()))
        self.tail = default_tail if self.exact_tail is None else self.exact_tail
        blocks = len(_blocks(engine.model))
        self.skipped = default_skip_first(blocks, engine.dtype) if self.skip_first is None else self.skip_first
        self.quantized = quantize_blocks(engine.model, self.skipped, self.exact)
        _widen_except_embeddings(engine.model, engine.dtype)
        if self.compile_kernel:
            _Kernels.compile(engine.dtype)
        logger.info(
            "%s: %d linear layers in int8 (per-token activations, last %d positions refined), "
            "first %d block(s) in %s, kernel %s",
            engine.model_id,
            self.quantized,
            self.tail,
            self.skipped,
            engine.dtype,
            "compiled" if _Kernels.compiled else "eager",
        )

    def _score_batch(self, engine: ScoringEngine, batch: Batch, prefix: Any | None) -> torch.Tensor:
        if self.tail:
            assert batch.padding_side == "right", "the engine pads on the right"
            self.exact.rows = tail_rows(batch.lengths.cpu(), batch.input_ids.shape[1], self.tail)
        try:
            return super()._score_batch(engine, batch, prefix)
        finally:
            self.exact.rows = None
            _trim_heap()  # glibc keeps a batch's freed activations resident otherwise (README)


class OnnxInt8Backend(OnnxBackend):
    """ONNX Runtime with an int8 dynamically quantized graph, on the CPU."""

    name = "onnx-int8"
    quantize: ClassVar[str | None] = "int8"


class TorchAoInt8Backend(PaddedBackend):
    """PyTorch's dynamic int8 quantization of every ``nn.Linear`` (``torch.ao``), for comparison.

    Loads the float32 model and quantizes it in place (activations per tensor, fbgemm); keeps
    the default backend's batching and prefix reuse. Much slower than :class:`Int8Backend` and
    :class:`OnnxInt8Backend` on the CPUs measured.
    """

    name = "torch-ao-int8"

    def model_kwargs(self, device: torch.device, dtype: torch.dtype, family: RerankerFamily) -> dict[str, Any]:
        # Dynamic quantization needs float32 weights, whatever dtype the engine would pick.
        return {**super().model_kwargs(device, torch.float32, family), "dtype": torch.float32}

    def prepare(self, engine: ScoringEngine) -> None:
        from torch.ao.quantization import quantize_dynamic

        if engine.device.type != "cpu":
            raise ValueError(f"the {self.name} backend runs on the CPU, not on {engine.device}")
        # In place: the head holds references to the model's modules, which now hold the
        # quantized layers. The LM head is not called by the v2 head (it reads two rows).
        quantize_dynamic(engine.model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
