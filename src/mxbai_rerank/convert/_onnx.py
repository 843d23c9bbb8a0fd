"""``--to onnx``: a reranker as an ONNX graph with its score head inside, optionally int8-quantized.

The graph computes what the family's head computes, for right-padded batches:

    inputs   input_ids       (batch, sequence) int64
             attention_mask  (batch, sequence) int64, 1 on real tokens, a prefix of each row
             [token_type_ids (batch, sequence) int64, only for models with token types]
    output   scores          (batch,) float32, the raw score of each pair

with dynamic batch and sequence axes. The exported graph is rewritten for ONNX Runtime
(onnxscript's ``optimize_for_ort``: fused RMS norms, rotary embeddings and attention, which
are ``com.microsoft`` operators), so it runs on ONNX Runtime. ``quantize="int8"`` applies ONNX
Runtime's dynamic quantization: int8 weights of every MatMul and of the embedding table,
activations quantized per call.

A folder written here holds the graph, ``config.json`` (with the ``mxbai_rerank`` marker, so
the family is known), the tokenizer files and :data:`MANIFEST`, which says which graph to run.
``mxbai_rerank.load(folder)`` runs it through the ``onnx`` (or ``onnx-int8``) backend.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._extras import require
from ._output import ConversionError, atomic_output_dir, check_output_dir

if TYPE_CHECKING:
    from .._engine import ScoringEngine

__all__ = [
    "GRAPH_FLOAT32",
    "GRAPH_INT8",
    "MANIFEST",
    "OnnxResult",
    "convert_to_onnx",
    "export_engine",
    "quantize_int8",
    "read_manifest",
]

logger = logging.getLogger(__name__)

MANIFEST = "mxbai_rerank_onnx.json"
GRAPH_FLOAT32 = "model.onnx"
GRAPH_INT8 = "model_int8.onnx"
_FORMAT = 1
# Largest dimensions the exporter may assume; real limits come from the model's window.
_MAX_BATCH = 65536
_MAX_SEQUENCE = 1 << 20


@dataclass(frozen=True)
class OnnxResult:
    """What ``convert_to_onnx`` wrote."""

    output: Path
    graph: str
    family: str
    quantize: str | None


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The manifest of an ONNX folder written here, or ``None`` when ``folder`` is not one."""
    path = Path(os.path.expanduser(str(folder))) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConversionError(f"unreadable ONNX manifest {str(path)!r}: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT or "graph" not in manifest:
        raise ConversionError(f"{str(path)!r} is not an ONNX manifest this version reads (format {_FORMAT})")
    return manifest


def _export_module(engine: ScoringEngine) -> Any:
    """The engine's head as a module of (input_ids, attention_mask[, token_type_ids]) -> (B,) scores."""
    import torch

    from .._batching import Batch

    head = engine.head

    class _Graph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = head

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
        ) -> torch.Tensor:
            # Right padding: each row's real tokens are its first ``attention_mask.sum()`` ones.
            batch = Batch(input_ids, attention_mask, attention_mask.sum(dim=1), token_type_ids)
            return head(batch)  # (B,) float32

    return _Graph().eval()


def uses_token_types(engine: ScoringEngine) -> bool:
    return int(getattr(engine.config, "type_vocab_size", 0) or 0) > 0


def export_engine(engine: ScoringEngine, folder: Path) -> Path:
    """Export ``engine``'s model and head (float32, CPU) to ``folder/model.onnx`` (+ ``.data``), fused for ORT."""
    import torch

    require("onnx", "onnx")
    require("onnxscript", "onnx")
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    if engine.dtype != torch.float32 or engine.device.type != "cpu":
        raise ConversionError(f"export needs the model in float32 on the CPU, got {engine.dtype} on {engine.device}")
    module = _export_module(engine)
    types = uses_token_types(engine)
    # Two rows of different lengths, so no dimension is specialised to a constant.
    ids = torch.tensor([[engine.pad_token_id + 1] * 12, [engine.pad_token_id + 1] * 12], dtype=torch.long)
    ids = ids.clamp(max=int(engine.config.vocab_size) - 1)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    args: tuple[torch.Tensor, ...] = (ids, mask, torch.zeros_like(ids)) if types else (ids, mask)
    names = ["input_ids", "attention_mask", "token_type_ids"][: len(args)]
    batch = torch.export.Dim("batch", min=1, max=_MAX_BATCH)
    sequence = torch.export.Dim("sequence", min=2, max=_MAX_SEQUENCE)
    dynamic = {name: {0: batch, 1: sequence} for name in names}
    with torch.inference_mode(False), torch.no_grad():
        program = torch.onnx.export(
            module, args, input_names=names, output_names=["scores"], dynamic_shapes=dynamic, dynamo=True,
            verbose=False,
        )  # fmt: skip
    if program is None:
        raise ConversionError("the ONNX exporter returned no program")
    model, counts = optimize_for_ort(program.model)
    logger.info("ONNX Runtime fusions: %s", {k: v for k, v in counts.items() if v})
    path = folder / GRAPH_FLOAT32
    import onnx_ir

    # External data: a float32 0.5B graph is close to protobuf's 2 GB limit.
    onnx_ir.save(model, path, external_data=f"{GRAPH_FLOAT32}.data")
    return path


def quantize_int8(source: Path, target: Path) -> Path:
    """ONNX Runtime dynamic int8 quantization of every MatMul with constant weights and of Gather (embeddings)."""
    require("onnxruntime", "onnx")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        source,
        target,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul", "Gather"],
        extra_options={"MatMulConstBOnly": True},
    )
    return target


def write_folder(engine: ScoringEngine, folder: Path, *, quantize: str | None, estimated_max: float | None) -> str:
    """Export (and quantize) ``engine`` into ``folder`` with config, tokenizer and manifest; the graph's name."""
    import copy

    import onnx
    import torch

    graph = export_engine(engine, folder)
    if quantize == "int8":
        quantize_int8(graph, folder / GRAPH_INT8)
        for leftover in (graph, folder / f"{GRAPH_FLOAT32}.data"):
            leftover.unlink(missing_ok=True)
        graph = folder / GRAPH_INT8
    elif quantize is not None:
        raise ConversionError(f"unknown quantization {quantize!r}; use int8")
    config = copy.deepcopy(engine.config)
    marker = dict(getattr(config, "mxbai_rerank", None) or {})
    marker.update({"family": engine.family.name, "format": "onnx", "source": engine.model_id})
    if estimated_max is not None:
        marker["estimated_max"] = estimated_max
    config.mxbai_rerank = marker
    config.save_pretrained(folder)
    engine.tokenizer.save_pretrained(folder)
    import onnxruntime

    manifest = {
        "format": _FORMAT,
        "graph": graph.name,
        "family": engine.family.name,
        "quantization": "int8-dynamic" if quantize == "int8" else None,
        "inputs": ["input_ids", "attention_mask", *(["token_type_ids"] if uses_token_types(engine) else [])],
        "output": "scores",
        "padding": "right",
        "pad_token_id": engine.pad_token_id,
        "source": engine.model_id,
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return graph.name


def convert_to_onnx(
    model: str,
    output: str | os.PathLike[str],
    *,
    family: str | None = None,
    quantize: str | None = None,
    overwrite: bool = False,
    **hub_kwargs: Any,
) -> OnnxResult:
    """Export ``model`` (v1 or v2, or a converted seq-cls folder) to an ONNX folder at ``output``."""
    require("onnxruntime", "onnx")
    check_output_dir(output, overwrite)
    if quantize not in (None, "int8"):
        raise ConversionError(f"unknown quantization {quantize!r}; use int8")
    from .. import load

    reranker = load(model, family=family, device="cpu", torch_dtype="float32", backend="torch", **hub_kwargs)
    with atomic_output_dir(output, overwrite) as tmp:
        graph = write_folder(
            reranker.engine, tmp, quantize=quantize, estimated_max=getattr(reranker, "estimated_max", None)
        )
    final = Path(os.path.expanduser(str(output))).absolute()
    return OnnxResult(final, graph, reranker.family, quantize)
