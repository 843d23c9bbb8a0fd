"""Score heads: ``torch.nn.Module``s mapping a token batch to one raw score per pair.

A head wraps the loaded transformers model (its modules are shared, not copied) and runs
backbone -> pooling -> projection in :meth:`ScoreHead.forward`, which works with gradients, so
training reuses the same head. The engine, not the head, decides on ``torch.inference_mode``.

Heads declare what the engine may do with them: ``reuses_prefix`` says whether a token
prefix shared by many rows can be encoded once and reused (true for causal attention, where
a prefix's states do not depend on what follows; false for bidirectional encoders), and
``packs`` whether many sequences can run back to back in one row with variable-length causal
attention (:meth:`AnswerTokenHead.forward_packed`; false for relative-position encoders such as
DeBERTa, whose attention cannot be cut into segments).
"""

from __future__ import annotations

import copy
import inspect
from typing import Any, ClassVar

import torch
from torch import nn

from ._batching import Batch

__all__ = ["AnswerTokenHead", "ClassifierHead", "ScoreHead", "last_token_pool"]


def last_token_pool(hidden: torch.Tensor, batch: Batch) -> torch.Tensor:
    """(B, T, H) hidden states -> (B, H) states at each row's last real token."""
    if batch.padding_side == "left":
        return hidden[:, -1]
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return hidden[rows, batch.lengths - 1]


class ScoreHead(nn.Module):
    """Base class: ``forward(batch, prefix=None) -> (B,)`` float32 raw scores."""

    reuses_prefix: ClassVar[bool] = False
    packs: ClassVar[bool] = False

    def encode_prefix(self, ids: list[int]) -> Any:
        """Reusable state for a token prefix every row of later batches starts with."""
        raise NotImplementedError(f"{type(self).__name__} cannot reuse a prefix")

    def forward(self, batch: Batch, prefix: Any | None = None) -> torch.Tensor:
        raise NotImplementedError


def _cache_keyword(module: nn.Module) -> str:
    """``cache`` on transformers versions that renamed ``past_key_values`` (5.2x), else the old name."""
    params = inspect.signature(module.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


class AnswerTokenHead(ScoreHead):
    """A causal LM answering with one token: ``logit(positive) - logit(negative)`` at the last position.

    ``logits[pos] - logits[neg] == h @ (W[pos] - W[neg]) (+ b[pos] - b[neg])``, so one (H,)
    direction replaces the (T x vocab) logits a plain forward pass would compute. The direction
    is recomputed from the LM-head rows in every call (two rows: free), so it follows training
    of the LM head or of tied embeddings.
    """

    reuses_prefix: ClassVar[bool] = True
    packs: ClassVar[bool] = True

    def __init__(self, model: nn.Module, positive_id: int, negative_id: int) -> None:
        super().__init__()
        self.backbone = model.get_decoder()  # type: ignore[operator]
        self.lm_head = model.get_output_embeddings()  # type: ignore[operator]
        self.positive_id = int(positive_id)
        self.negative_id = int(negative_id)
        self._cache_kw = _cache_keyword(self.backbone)

    def direction(self) -> tuple[torch.Tensor, torch.Tensor | float]:
        """The (H,) float32 score direction and the scalar offset from the LM head's bias."""
        weight = self.lm_head.weight
        direction = weight[self.positive_id].float() - weight[self.negative_id].float()
        bias = getattr(self.lm_head, "bias", None)
        offset = 0.0 if bias is None else bias[self.positive_id].float() - bias[self.negative_id].float()
        return direction, offset

    def project(self, last_hidden: torch.Tensor) -> torch.Tensor:
        """(B, H) last hidden states -> (B,) float32 scores."""
        direction, offset = self.direction()
        return last_hidden.float() @ direction + offset

    def encode_prefix(self, ids: list[int]) -> Any:
        """The key/value cache of ``ids`` (a batch of one), reused by later batches."""
        device = self.lm_head.weight.device
        out = self.backbone(input_ids=torch.tensor([ids], device=device), use_cache=True)
        return out.cache if hasattr(out, "cache") else out.past_key_values

    def forward(self, batch: Batch, prefix: Any | None = None) -> torch.Tensor:
        kwargs: dict[str, Any] = {"input_ids": batch.input_ids}
        if prefix is not None:
            # Rows attend to the shared prefix's cached keys and values; positions continue
            # after it. The cache is copied because the forward pass appends to it.
            cache = copy.deepcopy(prefix)
            cache.batch_repeat_interleave(batch.input_ids.shape[0])
            kwargs.update({self._cache_kw: cache, "use_cache": True})
        else:
            kwargs["use_cache"] = False
        if batch.padding_side == "left":
            # Left padding (upstream's layout): real tokens must not attend to the pads.
            kwargs["attention_mask"] = batch.attention_mask
        # Right padding + causal attention: no real token attends to a pad, so no mask is
        # needed (and without a cache SDPA takes its causal fast path).
        hidden = self.backbone(**kwargs).last_hidden_state  # (B, T, H)
        return self.project(last_token_pool(hidden, batch))  # (B,)

    def forward_packed(
        self, input_ids: torch.Tensor, position_ids: torch.Tensor, cu_seqlens: torch.Tensor, max_length: int
    ) -> torch.Tensor:
        """Scores of B sequences packed back to back, no padding: (B,) float32.

        ``input_ids``, ``position_ids``: (1, T), positions restarting at 0 for every sequence;
        ``cu_seqlens``: (B + 1,) int32, sequence b spans ``cu_seqlens[b]:cu_seqlens[b + 1]``;
        ``max_length``: the longest sequence. The model's attention must honour the
        ``cu_seq_lens_*`` keywords (a varlen implementation, e.g. the engine's ``mxbai_packed``);
        under plain SDPA the sequences would attend to each other.
        """
        config = self.backbone.config
        # An already-built mask mapping: transformers skips mask construction (it would build a
        # (1, 1, T, T) mask from the restarting positions); the varlen attention needs none.
        no_masks = dict.fromkeys(("full_attention", "sliding_attention", *(getattr(config, "layer_types", None) or ())))
        hidden = self.backbone(
            input_ids=input_ids,
            position_ids=position_ids,
            attention_mask=no_masks,
            use_cache=False,
            cu_seq_lens_q=cu_seqlens,
            cu_seq_lens_k=cu_seqlens,
            max_length_q=max_length,
            max_length_k=max_length,
        ).last_hidden_state  # (1, T, H)
        last = cu_seqlens[1:].long() - 1  # (B,) each sequence's last token
        return self.project(hidden[0].index_select(0, last))  # (B,)


class ClassifierHead(ScoreHead):
    """A sequence classifier's single logit (a cross-encoder; v1 applies sigmoid afterwards)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self._token_types = getattr(model.config, "type_vocab_size", 0) > 0

    def forward(self, batch: Batch, prefix: Any | None = None) -> torch.Tensor:
        if prefix is not None:
            raise ValueError("a classifier head cannot reuse a prefix (bidirectional attention)")
        kwargs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        if batch.token_type_ids is not None and self._token_types:
            kwargs["token_type_ids"] = batch.token_type_ids
        logits = self.model(**kwargs).logits  # (B, 1)
        return logits[:, 0].float()
