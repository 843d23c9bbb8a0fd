"""``load()``: the right reranker for a checkpoint, looked up in the family registry."""

from __future__ import annotations

import importlib
from typing import Any

from ._engine import split_kwargs
from ._engine._loading import read_config
from ._model import TransformerReranker
from ._registry import DEFAULT_MODEL, RerankerFamily, detect_family


def identify_family(
    model_name_or_path: str, family: str | RerankerFamily | None = None, **hub_kwargs: Any
) -> RerankerFamily:
    """The family ``load`` would use for this checkpoint, read from its config alone (no weights).

    Raises :class:`ModelLoadError` exactly where ``load`` would refuse the model.
    """
    config = read_config(str(model_name_or_path), **split_kwargs(hub_kwargs)[0])
    return detect_family(str(model_name_or_path), config, family)[0]


def load(
    model_name_or_path: str = DEFAULT_MODEL, family: str | RerankerFamily | None = None, **kwargs: Any
) -> TransformerReranker:
    """Load a reranker: a known Mixedbread model, a checkpoint whose config names its family, or
    any checkpoint with ``family=`` given (``"mxbai-v1"``, ``"mxbai-v2"`` or a registered one).

    Unknown models are refused with a :class:`ModelLoadError` that says how to force a family.
    ``kwargs`` go to the reranker class (see :class:`~mxbai_rerank.MxbaiRerankV2`).
    """
    chosen = identify_family(model_name_or_path, family, **kwargs)
    module, name = chosen.reranker_class.split(":")
    cls: type[TransformerReranker] = getattr(importlib.import_module(module), name)
    return cls(model_name_or_path, family=chosen, **kwargs)
