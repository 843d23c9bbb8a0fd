"""The ``mxbai-v1`` family: DeBERTa-v3 cross-encoders with one relevance logit.

``mixedbread-ai/mxbai-rerank-{xsmall,base,large}-v1``. A pair is encoded with the tokenizer's
own pair template and truncation; the score is ``sigmoid(logit)``, already in (0, 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .._encoding import PairEncoder, TokenizerPairEncoder, TokenizerPool
from ._base import RerankerFamily, sigmoid

if TYPE_CHECKING:
    from torch import nn

    from .._heads import ScoreHead

__all__ = ["FAMILY", "MxbaiV1Family"]

# Tokenizers without a configured limit report a huge sentinel (int(1e30)).
_UNSET_LIMIT = 1_000_000


@dataclass(frozen=True)
class MxbaiV1Family(RerankerFamily):
    def build_encoder(
        self, tokenizers: TokenizerPool, config: Any, max_length: int | None, overrides: dict[str, Any]
    ) -> PairEncoder:
        if overrides:
            raise ValueError(f"the {self.name} family has no prompt template to override ({sorted(overrides)})")
        with tokenizers.borrow() as tok:
            limit = tok.model_max_length
        if not isinstance(limit, int) or limit > _UNSET_LIMIT:
            limit = int(getattr(config, "max_position_embeddings", 512))
        # Upstream: ``max_length or tokenizer.model_max_length``.
        return TokenizerPairEncoder(tokenizers, max_length or limit)

    def build_head(self, model: nn.Module, encoder: PairEncoder) -> ScoreHead:
        from .._heads import ClassifierHead

        return ClassifierHead(model)

    def postprocess(self, raw: np.ndarray, *, normalize: bool, estimated_max: float | None) -> np.ndarray:
        return sigmoid(raw)  # already in (0, 1): ``normalize`` changes nothing


FAMILY = MxbaiV1Family(
    name="mxbai-v1",
    description="Mixedbread v1: DeBERTa-v3 cross-encoders scoring sigmoid(logit)",
    auto_model_class="AutoModelForSequenceClassification",
    architecture_suffixes=("ForSequenceClassification",),
    attention_kernels=False,  # DeBERTa-v2 has only its eager attention in transformers
    reranker_class="mxbai_rerank.mxbai_rerank_v1:MxbaiRerankV1",
    single_logit=True,
)
