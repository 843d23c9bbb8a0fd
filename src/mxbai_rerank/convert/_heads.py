"""The score head of a converted (``--to seq-cls``) v2 checkpoint."""

from __future__ import annotations

import torch
from torch import nn

from .._heads import AnswerTokenHead

__all__ = ["SequenceScoreHead"]


class SequenceScoreHead(AnswerTokenHead):
    """A causal backbone under a one-label classifier: ``score = h_last @ score.weight[0] (+ bias[0])``.

    The same computation as :class:`~mxbai_rerank._heads.AnswerTokenHead` with the direction
    read from the classifier's (1, H) score row instead of two LM-head rows, so prefix reuse,
    right padding and last-token pooling work unchanged.
    """

    def __init__(self, model: nn.Module) -> None:
        # The answer ids are unused: ``direction`` below replaces the LM-head rows.
        super().__init__(model, 0, 1)
        score = model.score  # type: ignore[union-attr]
        if score.weight.shape[0] != 1:
            raise ValueError(f"expected a one-label classifier, got a score layer of shape {tuple(score.weight.shape)}")
        self.lm_head = score

    def direction(self) -> tuple[torch.Tensor, torch.Tensor | float]:
        """The (H,) float32 score row and the scalar bias (0 when the layer has none)."""
        weight = self.lm_head.weight  # (1, H)
        bias = getattr(self.lm_head, "bias", None)
        return weight[0].float(), 0.0 if bias is None else bias[0].float()
