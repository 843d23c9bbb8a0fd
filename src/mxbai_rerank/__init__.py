"""Fast, exact rerankers for Mixedbread's open ``mxbai-rerank`` models (v1 and v2).

>>> from mxbai_rerank import MxbaiRerankV2
>>> reranker = MxbaiRerankV2("mixedbread-ai/mxbai-rerank-base-v2")
>>> reranker.rank("Who wrote 'To Kill a Mockingbird'?", documents, top_k=3)

The pipeline: ``families`` (what a checkpoint is) -> ``_encoding`` (pairs to tokens) ->
``_batching`` (token-budget batches) -> ``_engine`` (loading, backends) -> ``_heads`` (raw
scores) -> consumers (``server``, ``cli``, ``evaluation``, ``ray``) through :class:`Scorer`.

The names below are imported on first use, so ``import mxbai_rerank`` (and the command line's
``--help``) does not pay for importing torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

# public name -> module that defines it
_EXPORTS = {
    "BaseReranker": ".base",
    "EncodedPairs": "._encoding",
    "MODELS": "._registry",
    "ModelLoadError": "._engine",
    "ModelSpec": "._registry",
    "MxbaiRerankV1": ".mxbai_rerank_v1",
    "MxbaiRerankV2": ".mxbai_rerank_v2",
    "NonFiniteScoreError": "._engine",
    "RankResult": ".base",
    "RerankerFamily": ".families",
    "RerankerOutput": "._model",
    "Scorer": "._scorer",
    "ScorerInfo": "._scorer",
    "TransformerReranker": "._model",
    "aggregate_windows": "._chunking",
    "available_families": "._registry",
    "get_family": "._registry",
    "identify_family": "._loader",
    "load": "._loader",
    "register_family": "._registry",
}

__all__ = [
    "MODELS",
    "BaseReranker",
    "EncodedPairs",
    "ModelLoadError",
    "ModelSpec",
    "MxbaiRerankV1",
    "MxbaiRerankV2",
    "NonFiniteScoreError",
    "RankResult",
    "RerankerFamily",
    "RerankerOutput",
    "Scorer",
    "ScorerInfo",
    "TransformerReranker",
    "__version__",
    "aggregate_windows",
    "available_families",
    "get_family",
    "identify_family",
    "load",
    "register_family",
]

if TYPE_CHECKING:
    from ._chunking import aggregate_windows
    from ._encoding import EncodedPairs
    from ._engine import ModelLoadError, NonFiniteScoreError
    from ._loader import identify_family, load
    from ._model import RerankerOutput, TransformerReranker
    from ._registry import MODELS, ModelSpec, available_families, get_family, register_family
    from ._scorer import Scorer, ScorerInfo
    from .base import BaseReranker, RankResult
    from .families import RerankerFamily
    from .mxbai_rerank_v1 import MxbaiRerankV1
    from .mxbai_rerank_v2 import MxbaiRerankV2


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'mxbai_rerank' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
