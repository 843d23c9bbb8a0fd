"""Variable-length (packed) causal attention, registered with transformers' ``AttentionInterface``.

A packed forward pass holds B sequences back to back in one row, with no padding::

    input_ids, position_ids   (1, T)       positions restart at 0 for every sequence
    cu_seqlens                (B + 1,)     int32, cu_seqlens[0] == 0, cu_seqlens[-1] == T
    max_length                int          longest sequence (a host-side int: no device sync)

Every token attends causally to the tokens of its own sequence only. The model's code is not
forked: :func:`register_packed_attention` registers :data:`PACKED_ATTENTION` as an attention
function; a model switched to it with ``model.set_attn_implementation(PACKED_ATTENTION)``
routes every attention layer through :func:`packed_attention_forward`, which

* runs a varlen kernel when the call is packed (``cu_seq_lens_q`` in its keywords, or inside
  :func:`packed_call`): ``flash_attn.flash_attn_varlen_func`` when that package is installed,
  else ``torch.nn.attention.varlen.varlen_attn`` (CUDA, fp16/bf16), else
  :func:`reference_varlen_attention` (causal attention written out per segment: CPUs, float32,
  old GPUs);
* hands every other call (padded batches, a prefix cache) to transformers' own SDPA function,
  with SDPA's masks (the same mask function is registered under the same name), so the model
  still scores padded batches and runs its model-level ``forward`` exactly as with ``"sdpa"``.

A packed caller must bypass transformers' mask construction (it would materialise a (1, 1, T,
T) mask from the restarting positions): :meth:`~mxbai_rerank._heads.AnswerTokenHead.forward_packed`
passes ``attention_mask`` as an already-built mapping of ``None`` masks.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import itertools
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "PACKED_ATTENTION",
    "PackedCall",
    "packed_attention_forward",
    "packed_call",
    "reference_varlen_attention",
    "register_packed_attention",
    "varlen_attention",
    "varlen_kernel",
]

logger = logging.getLogger(__name__)

# The name under which the packed attention is registered (attention and mask interfaces).
PACKED_ATTENTION = "mxbai_packed"

_Kernel = Callable[..., torch.Tensor]  # (q, k, v, cu, max_length, scale) -> (T, Hq, D)


@dataclass
class PackedCall:
    """What the packed backend knows about the forward pass it is running.

    ``cu_seqlens``: (B + 1,) int32 on the model's device; ``cu_host``: the same offsets on the
    host (the reference path slices with them: no device sync); ``layers``: attention calls
    seen, so the caller can prove that the model routed its attention here.
    """

    cu_seqlens: torch.Tensor
    cu_host: Sequence[int]
    max_length: int
    layers: int = 0


_CURRENT: ContextVar[PackedCall | None] = ContextVar("mxbai_packed_call", default=None)


@contextlib.contextmanager
def packed_call(cu_seqlens: torch.Tensor, cu_host: Sequence[int], max_length: int) -> Iterator[PackedCall]:
    """Mark the forward passes inside the block as packed with these offsets."""
    call = PackedCall(cu_seqlens, list(cu_host), int(max_length))
    token = _CURRENT.set(call)
    try:
        yield call
    finally:
        _CURRENT.reset(token)


# Query rows per block in the reference attention: bounds its (heads, block, L) logits.
_REFERENCE_BLOCK = 256


def _causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Causal attention of one sequence, written out in float32: (H, L, D) x3 -> (H, L, D).

    Query rows go in blocks, so the logits are (H, block, L) at most, not (H, L, L). Not
    ``F.scaled_dot_product_attention``: on CPUs (torch 2.13) its first call after calls of other
    shapes sometimes returned wrong rows (errors up to 1e-3, nondeterministic), and this path is
    the reference the GPU kernels are checked against.
    """
    length = q.shape[1]
    q, k, v = q.float(), k.float(), v.float()
    out = torch.empty_like(q)
    positions = torch.arange(length, device=q.device)
    for start in range(0, length, _REFERENCE_BLOCK):
        end = min(start + _REFERENCE_BLOCK, length)
        logits = (q[:, start:end] @ k[:, :end].transpose(1, 2)) * scale  # (H, block, end)
        future = positions[None, :end] > positions[start:end, None]  # (block, end): keys after the query
        out[:, start:end] = logits.masked_fill(future, float("-inf")).softmax(-1) @ v[:, :end]
    return out


def reference_varlen_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, cu_host: Sequence[int], scale: float | None = None
) -> torch.Tensor:
    """Causal attention within each segment, written out per segment (any device and dtype).

    ``query``: (T, Hq, D); ``key``, ``value``: (T, Hkv, D) with Hq a multiple of Hkv (grouped
    queries); segment b spans ``cu_host[b]:cu_host[b + 1]``. Returns (T, Hq, D) in the input
    dtype, computed in float32.
    """
    total, heads, dim = query.shape
    if cu_host[0] != 0 or cu_host[-1] != total:
        raise ValueError(f"cu_seqlens {list(cu_host)[:4]}... do not span the {total} packed tokens")
    groups = heads // key.shape[1]
    scale = dim**-0.5 if scale is None else scale
    out = torch.empty_like(query)
    for start, end in itertools.pairwise(cu_host):
        if end <= start:
            continue
        q = query[start:end].transpose(0, 1)  # (Hq, L, D)
        k = key[start:end].transpose(0, 1)  # (Hkv, L, D)
        v = value[start:end].transpose(0, 1)
        if groups > 1:  # head h uses key/value head h // groups, as transformers' repeat_kv
            k = k.repeat_interleave(groups, dim=0)
            v = v.repeat_interleave(groups, dim=0)
        out[start:end] = _causal_attention(q, k, v, scale).transpose(0, 1).to(out.dtype)
    return out


def _flash_attn_kernel() -> _Kernel | None:
    if importlib.util.find_spec("flash_attn") is None:
        logger.debug("flash_attn is not installed: its varlen kernel is not used")
        return None
    try:
        flash_attn = importlib.import_module("flash_attn")
    except ImportError as exc:  # installed but broken (a CUDA/torch mismatch): say why
        logger.warning("flash_attn is installed but cannot be imported (%s); using another varlen kernel", exc)
        return None
    func = flash_attn.flash_attn_varlen_func

    def run(
        q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu: torch.Tensor, max_length: int, scale: float | None
    ) -> torch.Tensor:
        # Grouped queries are native: k and v keep their Hkv heads.
        return func(q, k, v, cu, cu, max_length, max_length, dropout_p=0.0, softmax_scale=scale, causal=True)

    return run


def _torch_varlen_kernel() -> _Kernel | None:
    try:
        varlen = importlib.import_module("torch.nn.attention.varlen")
    except ImportError as exc:
        logger.debug("torch %s has no torch.nn.attention.varlen (%s)", torch.__version__, exc)
        return None
    func = varlen.varlen_attn
    params = inspect.signature(func).parameters
    # The keywords changed between torch releases: causal is ``window_size=(-1, 0)`` in newer
    # ones, ``is_causal=True`` in older ones; ``enable_gqa`` is not everywhere either.
    extra: dict[str, Any] = {}
    if "window_size" in params:
        extra["window_size"] = (-1, 0)
    elif "is_causal" in params:
        extra["is_causal"] = True
    else:
        logger.debug("torch varlen_attn%s has no causal option; not used", inspect.signature(func))
        return None
    native_gqa = "enable_gqa" in params
    if native_gqa:
        extra["enable_gqa"] = True
    has_scale = "scale" in params

    def run(
        q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu: torch.Tensor, max_length: int, scale: float | None
    ) -> torch.Tensor:
        if not native_gqa and k.shape[1] != q.shape[1]:
            k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
            v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()  # (T, H, D) views of (1, H, T, D) tensors
        kwargs = dict(extra)
        if has_scale:
            kwargs["scale"] = scale
        elif scale is not None and abs(scale - q.shape[-1] ** -0.5) > 1e-6:
            raise ValueError("this torch varlen_attn has no scale argument and the model needs a non-default scale")
        return func(q, k, v, cu, cu, max_length, max_length, **kwargs)

    return run


_KERNELS: dict[str, Callable[[], _Kernel | None]] = {"flash_attn": _flash_attn_kernel, "torch": _torch_varlen_kernel}
_chosen: dict[tuple[str, int | None, torch.dtype], tuple[str, _Kernel] | None] = {}
_chosen_lock = threading.Lock()


def _probe(kernel: _Kernel, device: torch.device, dtype: torch.dtype) -> None:
    """Run ``kernel`` on two tiny segments with grouped queries; raise if it fails or disagrees."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    # (T, H, D) views of (1, H, T, D) tensors, strided as the model hands them over.
    q, k, v = (torch.randn(1, h, 7, 64, generator=gen).to(device, dtype)[0].transpose(0, 1) for h in (4, 2, 2))
    cu_host = [0, 3, 7]
    cu = torch.tensor(cu_host, dtype=torch.int32, device=device)
    got = kernel(q, k, v, cu, 4, 0.125).float()
    want = reference_varlen_attention(q.float(), k.float(), v.float(), cu_host, 0.125)
    err = (got - want).abs().max().item()
    if not err < 5e-2:
        raise RuntimeError(f"varlen kernel differs from the reference by {err:.3g}")


def varlen_kernel(device: torch.device, dtype: torch.dtype) -> str | None:
    """The varlen kernel packed attention uses on ``device`` in ``dtype``: ``"flash_attn"``,
    ``"torch"``, or ``None`` (the reference path). Decided once per device and dtype; each
    candidate is checked on a tiny input before it is trusted."""
    return None if (found := _kernel_for(device, dtype)) is None else found[0]


def _kernel_for(device: torch.device, dtype: torch.dtype) -> tuple[str, _Kernel] | None:
    if device.type != "cuda" or dtype not in (torch.float16, torch.bfloat16):
        return None  # the varlen kernels are CUDA flash kernels, half precision only
    index = device.index if device.index is not None else torch.cuda.current_device()
    key = (device.type, index, dtype)
    with _chosen_lock:
        if key in _chosen:
            return _chosen[key]
        found: tuple[str, _Kernel] | None = None
        if torch.cuda.get_device_capability(index) < (8, 0):
            logger.info("GPU %d is older than sm80: no varlen kernel, packed attention uses the reference", index)
        else:
            for name, make in _KERNELS.items():
                kernel = make()
                if kernel is None:
                    continue
                try:
                    _probe(kernel, torch.device("cuda", index), dtype)
                except Exception as exc:  # a kernel that fails its check is not used, and we say so
                    logger.warning("varlen kernel %s fails on cuda:%d in %s (%s); not used", name, index, dtype, exc)
                    continue
                found = (name, kernel)
                break
        logger.debug("varlen kernel on cuda:%d in %s: %s", index, dtype, found[0] if found else "reference")
        _chosen[key] = found
        return found


def varlen_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    cu_seqlens: torch.Tensor,
    cu_host: Sequence[int] | None,
    max_length: int,
    scale: float | None = None,
) -> torch.Tensor:
    """Packed causal attention: (T, Hq, D), (T, Hkv, D), (T, Hkv, D) -> (T, Hq, D), with the best
    kernel for the tensors' device and dtype (see :func:`varlen_kernel`)."""
    found = _kernel_for(query.device, query.dtype)
    if found is not None:
        return found[1](query, key, value, cu_seqlens, max_length, scale)
    if cu_host is None:
        cu_host = [int(x) for x in cu_seqlens.tolist()]  # a sync; the packed backend passes them
    return reference_varlen_attention(query, key, value, cu_host, scale)


@torch.library.custom_op("mxbai_rerank::varlen_attention", mutates_args=())
def _varlen_op(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, cu_seqlens: torch.Tensor, max_length: int,
    scale: float,
) -> torch.Tensor:  # fmt: skip
    """:func:`varlen_attention` as one opaque operator: compiled layers call it whole, so their
    graphs hold the attention without tracing the kernels' Python wrappers or the reference
    path's host offsets. The result is contiguous (T, Hq, D), as its shape function says: the
    torch kernel's output already is (it runs on contiguous copies), so nothing is copied."""
    return varlen_attention(query, key, value, cu_seqlens, None, max_length, scale).contiguous()


@_varlen_op.register_fake
def _varlen_op_shape(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, cu_seqlens: torch.Tensor, max_length: int,
    scale: float,
) -> torch.Tensor:  # fmt: skip
    return query.new_empty(query.shape)  # contiguous


def packed_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    sliding_window: int | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature. ``query``: (1, Hq, T, D); ``key``, ``value``:
    (1, Hkv, T, D). Returns ((1, T, Hq, D), None) for a packed call; anything else goes to SDPA.

    Eagerly, the offsets come from :func:`packed_call` (counting the layers that saw them).
    Compiled layers trace this function (:meth:`~._packed.PackedBackend.compile`): then the
    offsets come from the ``cu_seq_lens_q``/``max_length_q`` keywords the packed head passes, and
    the attention is one operator in the layer's graph (:func:`_varlen_op`), so a layer is one
    graph, not two around an eager call. With gradients enabled (the operator has no backward)
    compiled layers call this function eagerly, between two graphs.
    """
    compiling = torch.compiler.is_compiling()
    if compiling and torch.is_grad_enabled():
        return _packed_attention_outside_graph(module, query, key, value, attention_mask, dropout, scaling,
                                               sliding_window, **kwargs)  # fmt: skip
    call = None if compiling else _CURRENT.get()  # a graph cannot read the context variable
    cu = kwargs.get("cu_seq_lens_q")
    if call is None and cu is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    if call is not None:
        call.layers += 1
        cu, cu_host, max_length = call.cu_seqlens, call.cu_host, call.max_length
    else:
        cu_host, max_length = None, kwargs.get("max_length_q") or 0  # symbolic while compiling
    if query.shape[0] != 1 or key.shape[2] != query.shape[2]:
        raise ValueError(f"a packed call holds one row and no cache, got query {tuple(query.shape)}, key "
                         f"{tuple(key.shape)}")  # fmt: skip
    if sliding_window is not None:
        raise ValueError("packed attention does not implement sliding windows")
    if dropout:
        raise ValueError("packed attention runs without dropout")
    q = query[0].transpose(0, 1)  # (T, Hq, D)
    k = key[0].transpose(0, 1)  # (T, Hkv, D)
    v = value[0].transpose(0, 1)
    if compiling:
        scale = q.shape[-1] ** -0.5 if scaling is None else float(scaling)
        out = _varlen_op(q, k, v, cu, max_length or q.shape[0], scale)  # (T, Hq, D)
    else:
        out = varlen_attention(q, k, v, cu, cu_host, int(max_length) or q.shape[0], scaling)
    return out.unsqueeze(0), None


# The function as compiled layers call it with gradients enabled: eagerly, outside the graph.
_packed_attention_outside_graph = torch.compiler.disable(packed_attention_forward)

_registered = False


def register_packed_attention() -> str:
    """Register :data:`PACKED_ATTENTION` (attention function and SDPA's mask function); idempotent."""
    global _registered
    if not _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

        AttentionInterface.register(PACKED_ATTENTION, packed_attention_forward)
        # Non-packed calls get exactly the masks SDPA would get.
        AttentionMaskInterface.register(PACKED_ATTENTION, sdpa_mask)
        _registered = True
    return PACKED_ATTENTION
