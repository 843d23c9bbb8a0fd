"""``load()``: the right reranker for a checkpoint, looked up in the family registry."""

from __future__ import annotations

import importlib
from typing import Any

from ._engine import split_kwargs
from ._engine._loading import read_config
from ._model import TransformerReranker
from ._registry import DEFAULT_MODEL, RerankerFamily, detect_family


def load(
    model_name_or_path: str = DEFAULT_MODEL, family: str | RerankerFamily | None = None, **kwargs: Any
) -> TransformerReranker:
    """Load a reranker: a known Mixedbread model, a checkpoint whose config names its family, or
    any checkpoint with ``family=`` given (``"mxbai-v1"``, ``"mxbai-v2"`` or a registered one).

    Unknown models are refused with a :class:`ModelLoadError` that says how to force a family.
    ``kwargs`` go to the reranker class (see :class:`~mxbai_rerank.MxbaiRerankV2`).
    """
    hub_kwargs, _ = split_kwargs(kwargs)
    chosen, _spec = detect_family(str(model_name_or_path), read_config(str(model_name_or_path), **hub_kwargs), family)
    module, name = chosen.reranker_class.split(":")
    cls = getattr(importlib.import_module(module), name)
    if cls is TransformerReranker:
        return cls(model_name_or_path, family=chosen, **kwargs)
    return cls(model_name_or_path, **kwargs)
