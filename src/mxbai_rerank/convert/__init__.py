"""Conversions of a reranker into checkpoints other stacks load (``mxbai-rerank convert``).

* :func:`convert_to_seq_cls` - a v2 model as a one-label ``*ForSequenceClassification``
  checkpoint (transformers, sentence-transformers, vLLM) with its prompt as a chat template;
* :func:`convert_to_onnx` - a v1 or v2 model as an ONNX graph with the score head inside
  (one raw score per pair), optionally int8 dynamically quantized.

Output folders are written atomically: a temporary sibling, renamed into place when complete.
"""

from __future__ import annotations

from typing import Any

from ._output import ConversionError

__all__ = ["ConversionError", "convert_to_onnx", "convert_to_seq_cls"]


def __getattr__(name: str) -> Any:
    # The converters import torch and transformers; importing this package must not.
    if name == "convert_to_seq_cls":
        from ._seq_cls import convert_to_seq_cls

        return convert_to_seq_cls
    if name == "convert_to_onnx":
        from ._onnx import convert_to_onnx

        return convert_to_onnx
    raise AttributeError(name)
