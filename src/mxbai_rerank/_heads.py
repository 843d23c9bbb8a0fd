"""Backbone -> pooling -> score head, for both model families.

Each head maps a right-padded :class:`~._batching.Batch` to raw float32 scores of shape (B,).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from ._batching import Batch


class ScoreHead(Protocol):
    def __call__(self, batch: Batch) -> torch.Tensor: ...


def last_token_pool(hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, T, H) right-padded hidden states -> (B, H) states at each row's last real token."""
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return hidden[rows, lengths - 1]


# Below this many shared tokens a separate prefix pass costs more than it saves.
MIN_SHARED_PREFIX = 8


class CausalLMBinaryHead:
    """v2: ``logit(positive) - logit(negative)`` at the last position, without the LM head.

    ``logits[pos] - logits[neg] == h @ (W[pos] - W[neg]) (+ b[pos] - b[neg])``, so one fp32
    vector replaces the (T x vocab) logits upstream materialises for every position.
    """

    def __init__(self, model: Any, positive_id: int, negative_id: int) -> None:
        self.backbone = model.get_decoder()
        lm_head = model.get_output_embeddings()
        weight = lm_head.weight.detach()
        self.direction = (weight[positive_id].float() - weight[negative_id].float()).contiguous()  # (H,)
        bias = getattr(lm_head, "bias", None)
        self.offset = 0.0 if bias is None else float(bias[positive_id].float() - bias[negative_id].float())

    def __call__(self, batch: Batch) -> torch.Tensor:
        ids, rows = batch.input_ids, batch.input_ids.shape[0]
        # The chat prefix (and, for a single query, the query) is identical in every row:
        # encode it once and let every row attend to its cached keys and values.
        shared = batch.shared_prefix if rows > 1 and batch.shared_prefix >= MIN_SHARED_PREFIX else 0
        cache = None
        if shared:
            cache = self.backbone(input_ids=ids[:1, :shared], use_cache=True).past_key_values
            cache.batch_repeat_interleave(rows)
        # Right padding + causal attention: no real token attends to a pad, so no padding
        # mask is needed (and without a cache SDPA takes its causal fast path).
        hidden = self.backbone(
            input_ids=ids[:, shared:], past_key_values=cache, use_cache=cache is not None
        ).last_hidden_state  # (B, T - shared, H)
        last = last_token_pool(hidden, batch.lengths - shared).float()  # (B, H)
        return last @ self.direction.to(last.device) + self.offset  # (B,)


class SequenceClassificationHead:
    """v1: the cross-encoder's single classification logit (sigmoid applied by the caller)."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def __call__(self, batch: Batch) -> torch.Tensor:
        kwargs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        if batch.token_type_ids is not None and getattr(self.model.config, "type_vocab_size", 0) > 0:
            kwargs["token_type_ids"] = batch.token_type_ids
        logits = self.model(**kwargs).logits  # (B, 1)
        return logits[:, 0].float()
