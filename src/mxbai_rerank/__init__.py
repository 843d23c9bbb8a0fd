"""Fast, exact rerankers for Mixedbread's open ``mxbai-rerank`` models (v1 and v2).

>>> from mxbai_rerank import MxbaiRerankV2
>>> reranker = MxbaiRerankV2("mixedbread-ai/mxbai-rerank-base-v2")
>>> reranker.rank("Who wrote 'To Kill a Mockingbird'?", documents, top_k=3)
"""

from __future__ import annotations

from ._encoding import EncodedPairs
from ._loader import load
from ._model import NonFiniteScoreError
from ._registry import MODELS, ModelSpec
from ._runtime import ModelLoadError
from ._scorer import Scorer, ScorerInfo
from .base import BaseReranker, RankResult
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
    "Scorer",
    "ScorerInfo",
    "__version__",
    "load",
]
