"""Backbone -> pooling -> score head, for both model families.

Each head maps a right-padded :class:`~._batching.Batch` to raw float32 scores of shape (B,).
"""

from __future__ import annotations

import copy
import warnings
from typing import Any, Protocol

import torch

from ._batching import Batch


class ScoreHead(Protocol):
    def encode_prefix(self, ids: list[int], device: torch.device) -> Any | None:
        """State for a token prefix every row of later batches starts with, or ``None``."""

    def __call__(self, batch: Batch, prefix: Any | None = None) -> torch.Tensor:
        """(B,) float32 raw scores; with ``prefix``, ``batch`` holds only the tokens after it."""


def last_token_pool(hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, T, H) right-padded hidden states -> (B, H) states at each row's last real token."""
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return hidden[rows, lengths - 1]


class CausalLMBinaryHead:
    """v2: ``logit(positive) - logit(negative)`` at the last position, without the LM head.

    ``logits[pos] - logits[neg] == h @ (W[pos] - W[neg]) (+ b[pos] - b[neg])``, so one fp32
    vector replaces the (T x vocab) logits upstream materialises for every position.
    """

    def __init__(self, model: Any, positive_id: int, negative_id: int) -> None:
        # transformers 5.2x flags ``past_key_values`` as deprecated in favour of ``cache``, yet
        # silently ignores ``cache=`` on Qwen2Model.forward; the tests pin the working keyword.
        warnings.filterwarnings("ignore", message="`past_key_values` is deprecated", category=FutureWarning)
        self.backbone = model.get_decoder()
        lm_head = model.get_output_embeddings()
        weight = lm_head.weight.detach()
        self.direction = (weight[positive_id].float() - weight[negative_id].float()).contiguous()  # (H,)
        bias = getattr(lm_head, "bias", None)
        self.offset = 0.0 if bias is None else float(bias[positive_id].float() - bias[negative_id].float())

    def encode_prefix(self, ids: list[int], device: torch.device) -> Any:
        """The key/value cache of ``ids`` (batch of one), reused by every later batch."""
        return self.backbone(input_ids=torch.tensor([ids], device=device), use_cache=True).past_key_values

    def __call__(self, batch: Batch, prefix: Any | None = None) -> torch.Tensor:
        cache = None
        if prefix is not None:
            # Rows attend to the shared prefix's cached keys and values; positions continue
            # after it. The cache is copied because the forward pass appends to it.
            cache = copy.deepcopy(prefix)
            cache.batch_repeat_interleave(batch.input_ids.shape[0])
        # Right padding + causal attention: no real token attends to a pad, so no padding
        # mask is needed (and without a cache SDPA takes its causal fast path).
        hidden = self.backbone(
            input_ids=batch.input_ids, past_key_values=cache, use_cache=cache is not None
        ).last_hidden_state  # (B, T, H)
        last = last_token_pool(hidden, batch.lengths).float()  # (B, H)
        return last @ self.direction.to(last.device) + self.offset  # (B,)


class SequenceClassificationHead:
    """v1: the cross-encoder's single classification logit (sigmoid applied by the caller)."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def encode_prefix(self, ids: list[int], device: torch.device) -> None:
        return None  # bidirectional attention: a prefix's states depend on what follows

    def __call__(self, batch: Batch, prefix: Any | None = None) -> torch.Tensor:
        kwargs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        if batch.token_type_ids is not None and getattr(self.model.config, "type_vocab_size", 0) > 0:
            kwargs["token_type_ids"] = batch.token_type_ids
        logits = self.model(**kwargs).logits  # (B, 1)
        return logits[:, 0].float()
