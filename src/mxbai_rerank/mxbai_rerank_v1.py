"""v1 rerankers (DeBERTa-v3 cross-encoders): ``mixedbread-ai/mxbai-rerank-{xsmall,base,large}-v1``."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ._encoding import V1Encoder
from ._heads import SequenceClassificationHead
from ._model import TransformerReranker

__all__ = ["MxbaiRerankV1"]


class MxbaiRerankV1(TransformerReranker):
    """A v1 cross-encoder: score = ``sigmoid(logit)``, already in (0, 1).

    Takes the same arguments as :class:`~mxbai_rerank.MxbaiRerankV2` except
    ``estimated_max``; ``max_length`` defaults to the tokenizer's limit (512). ``normalize``
    is accepted by ``rank`` and changes nothing; ``instruction`` is refused.
    """

    family = "v1"
    _auto_model_class = "AutoModelForSequenceClassification"
    _supports_sdpa = False  # DeBERTa-v2 has only its eager attention

    def __init__(self, model_name_or_path: str, *, max_length: int | None = None, **kwargs: Any) -> None:
        super().__init__(model_name_or_path, max_length=max_length, **kwargs)

    def _setup(self, max_length: int | None) -> None:
        limit = self.tokenizer.model_max_length
        if not isinstance(limit, int) or limit > 1_000_000:  # "unset" tokenizers report 1e30
            limit = int(getattr(self.config, "max_position_embeddings", 512))
        self.max_length = max_length or limit
        self._encoder = V1Encoder(self._tokenizer, self.max_length)
        self._head = SequenceClassificationHead(self.model)

    def _transform(self, raw: np.ndarray, *, normalize: bool) -> np.ndarray:
        return (1.0 / (1.0 + np.exp(-raw.astype(np.float64)))).astype(np.float32)

    def logits_to_scores(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)
