"""The ``int8`` backend: int8 CPU inference through ONNX Runtime's dynamic quantization.

Weights of every MatMul and the embedding table are int8; activations are quantized per call
(``DynamicQuantizeLinear``/``MatMulInteger``, VNNI/AMX-INT8 kernels where the CPU has them).
The graph is the one ``mxbai-rerank convert --to onnx --quantize int8`` writes: a folder
written by that command is loaded as it is, any other checkpoint is exported and quantized
once into the cache (see :mod:`._onnx`). The serving process never holds the float32 torch
model when the graph exists.

Why ONNX Runtime and not PyTorch's own int8 path: both were measured on the 0.5B v2 shape
(8 passages, 2 cores of an AMX Xeon): ``torch.ao.quantization.quantize_dynamic`` on the
``nn.Linear`` layers took 38.7 s, ONNX Runtime's dynamically quantized, ORT-fused graph about
4 s (and the bf16 torch default 1.75 s). :class:`TorchInt8Backend` keeps the PyTorch variant
runnable for that comparison (``backend=TorchInt8Backend()``); it is not registered by name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch

from ._backends import PaddedBackend
from ._onnx import OnnxBackend

if TYPE_CHECKING:
    from ..families import RerankerFamily
    from . import ScoringEngine

__all__ = ["Int8Backend", "TorchInt8Backend"]


class Int8Backend(OnnxBackend):
    """ONNX Runtime with an int8 dynamically quantized graph, on the CPU."""

    name = "int8"
    quantize: ClassVar[str | None] = "int8"


class TorchInt8Backend(PaddedBackend):
    """PyTorch's dynamic int8 quantization of every ``nn.Linear`` (``torch.ao``), for comparison.

    Loads the float32 model (about 2 GB for 0.5B parameters) and quantizes it in place; keeps
    the default backend's batching and prefix reuse. Much slower than :class:`Int8Backend`
    on the CPUs measured (see the module docstring).
    """

    name = "torch-int8"

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
