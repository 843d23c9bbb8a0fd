"""Fast, exact rerankers for Mixedbread's open ``mxbai-rerank`` models (v1 and v2).

>>> from mxbai_rerank import MxbaiRerankV2
>>> reranker = MxbaiRerankV2("mixedbread-ai/mxbai-rerank-base-v2")
>>> reranker.rank("Who wrote 'To Kill a Mockingbird'?", documents, top_k=3)

The pipeline: ``families`` (what a checkpoint is) -> ``_encoding`` (pairs to tokens) ->
``_batching`` (token-budget batches) -> ``_engine`` (loading, backends) -> ``_heads`` (raw
scores) -> consumers (``server``, ``cli``, ``evaluation``, ``ray``) through :class:`Scorer`.
"""

from __future__ import annotations

from ._encoding import EncodedPairs
from ._engine import ModelLoadError, NonFiniteScoreError
from ._loader import load
from ._model import RerankerOutput, TransformerReranker
from ._registry import MODELS, ModelSpec, available_families, get_family, register_family
from ._scorer import Scorer, ScorerInfo
from .base import BaseReranker, RankResult
from .families import RerankerFamily
from .mxbai_rerank_v1 import MxbaiRerankV1
from .mxbai_rerank_v2 import MxbaiRerankV2

__version__ = "0.2.0"

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
    "available_families",
    "get_family",
    "load",
    "register_family",
]
