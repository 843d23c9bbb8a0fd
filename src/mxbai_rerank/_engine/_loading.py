"""Device, dtype and attention-kernel choice, and checkpoint loading with clear errors.

Policy (``torch_dtype=None`` or ``"auto"``):

* CUDA: the checkpoint's half-precision dtype (bf16 for the Mixedbread models), or bf16
  when the checkpoint is float32 and the GPU supports it; Flash Attention 2 when the
  ``flash_attn`` package is installed, PyTorch SDPA otherwise.
* CPU: bf16 when the processor has native bf16 math (AVX512-BF16 or AMX), float32
  otherwise (emulated bf16 is slower than float32); SDPA.
* Apple MPS: float16 is not reliable for these models, so float32.

An explicit ``torch_dtype`` always wins.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from .._registry import looks_like_local_path

logger = logging.getLogger(__name__)

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}


class ModelLoadError(ValueError):
    """A model name or directory that cannot be loaded as a Mixedbread reranker."""


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The device to load on: the best available for ``None``/``"auto"``; an error naming the problem
    for a misspelt device or one this machine does not have."""
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        target = torch.device(device)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ModelLoadError(f"invalid device {device!r}: use cpu, cuda, cuda:N, mps or auto") from exc
    if target.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build of torch" if torch.version.cuda is None else "no visible GPU"
            raise ModelLoadError(f"device {device!r}: CUDA is not available on this machine ({build})")
        if target.index is not None and target.index >= torch.cuda.device_count():
            raise ModelLoadError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    elif target.type == "mps" and not _mps_available():
        raise ModelLoadError(f"device {device!r}: Apple MPS is not available on this machine")
    elif target.type not in ("cpu", "cuda", "mps"):
        raise ModelLoadError(f"unsupported device {device!r}: use cpu, cuda, cuda:N, mps or auto")
    return target


def cpu_has_native_bf16() -> bool:
    """True on processors with bf16 dot-product instructions (AVX512-BF16, AMX)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def resolve_dtype(torch_dtype: str | torch.dtype | None, device: torch.device, checkpoint_dtype: Any) -> torch.dtype:
    if isinstance(torch_dtype, torch.dtype):
        return torch_dtype
    if isinstance(torch_dtype, str) and torch_dtype != "auto":
        key = torch_dtype.removeprefix("torch.")
        if key not in _DTYPES:
            raise ValueError(f"unknown torch_dtype {torch_dtype!r}; use one of float32, bfloat16, float16, auto")
        return _DTYPES[key]
    if device.type == "cuda":
        ckpt = _DTYPES.get(str(checkpoint_dtype).removeprefix("torch.")) if checkpoint_dtype else None
        if ckpt in (torch.bfloat16, torch.float16):
            return ckpt
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


def attention_implementation(device: torch.device, dtype: torch.dtype) -> str:
    """The padded path's attention: Flash Attention 2 on CUDA in half precision where the
    ``flash_attn`` package is installed and the GPU is sm80 or newer (its kernels need that),
    else SDPA (on CUDA the padded backend keeps SDPA off cuDNN, see ``sdpa_without_cudnn``).
    The packed backend replaces the attention after loading (``_attention.PACKED_ATTENTION``)."""
    if device.type != "cuda" or dtype not in (torch.float16, torch.bfloat16):
        return "sdpa"
    if importlib.util.find_spec("flash_attn") is None:
        logger.debug("flash_attn is not installed: padded batches use SDPA")
        return "sdpa"
    index = device.index if device.index is not None else torch.cuda.current_device()
    if torch.cuda.get_device_capability(index) < (8, 0):
        logger.debug("cuda:%d is older than sm80: padded batches use SDPA, not flash_attn", index)
        return "sdpa"
    return "flash_attention_2"


def read_config(name_or_path: str, **kwargs: Any) -> Any:
    """The model's ``PretrainedConfig``, or a :class:`ModelLoadError` that says what is wrong."""
    from transformers import AutoConfig

    path = Path(os.path.expanduser(str(name_or_path)))
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"model path {str(path)!r} is a file; pass the model directory")
        config_file = path / str(kwargs.get("subfolder") or "") / "config.json"
        if not config_file.is_file():
            missing = config_file.relative_to(path)
            raise ModelLoadError(f"model directory {str(path)!r} has no {missing}: not a Hugging Face model")
        try:
            json.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"model directory {str(path)!r} has an unreadable config.json: {exc}") from exc
    elif looks_like_local_path(str(name_or_path)):
        raise ModelLoadError(f"model directory {str(name_or_path)!r} does not exist")
    try:
        return AutoConfig.from_pretrained(str(name_or_path), **kwargs)
    except ValueError as exc:  # e.g. a model_type this transformers version does not know
        raise ModelLoadError(f"cannot read the config of {str(name_or_path)!r}: {exc}") from exc
    except OSError as exc:
        raise ModelLoadError(
            f"cannot load {str(name_or_path)!r}: not a local model directory, and the hub could not provide it ({exc})"
        ) from exc


@contextmanager
def quiet_transformers(enabled: bool = True) -> Iterator[None]:
    """Silence transformers' loading progress bars (and, if asked, its warnings) for a block."""
    from transformers.utils import logging as hf_logging

    bar_was_enabled = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    if enabled:
        hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        if bar_was_enabled:
            hf_logging.enable_progress_bar()
        hf_logging.set_verbosity(verbosity)
