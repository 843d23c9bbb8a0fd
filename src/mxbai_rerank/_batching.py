"""Token-budget batching: sort by length, pack, pad right, restore order afterwards."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


def plan_batches(
    lengths: Sequence[int],
    *,
    max_tokens: int,
    max_batch_size: int,
    max_padding: float = 0.2,
    context_length: int = 0,
) -> list[list[int]]:
    """Group indices into batches of similar length, longest first.

    ``context_length``: tokens every row also attends to without holding them (a cached
    shared prefix); they count against the budget, since each row's attention spans them.

    Invariants: every index appears exactly once; within a batch the padded size
    ``len(batch) * (max(len) + context_length)`` is at most ``max_tokens``,
    ``len(batch) <= max_batch_size``, and every sequence is at least
    ``(1 - max_padding) * max(len)`` long, so at most that share of a batch is padding. A
    single sequence longer than ``max_tokens`` forms a batch of its own.
    """
    if max_tokens <= 0 or max_batch_size <= 0:
        raise ValueError("max_tokens and max_batch_size must be positive")
    if not 0.0 <= max_padding < 1.0:
        raise ValueError("max_padding must be in [0, 1)")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0  # the first (longest) length of the current batch
    for i in order:
        fits = (
            len(current) < max_batch_size
            and (len(current) + 1) * (longest + context_length) <= max_tokens
            and lengths[i] >= (1.0 - max_padding) * longest
        )
        if current and not fits:
            batches.append(current)
            current = []
        if not current:
            longest = lengths[i]
        current.append(i)
    if current:
        batches.append(current)
    return batches


@dataclass
class Batch:
    """A padded batch. ``input_ids``, ``attention_mask``: (B, T) int64; ``lengths``: (B,) int64,
    each >= 1. The engine pads on the right; ``padding_side="left"`` is upstream's layout,
    accepted by the model-level ``forward``."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    lengths: torch.Tensor
    token_type_ids: torch.Tensor | None = None
    padding_side: str = "right"

    def to(self, device: torch.device) -> Batch:
        return Batch(
            self.input_ids.to(device, non_blocking=True),
            self.attention_mask.to(device, non_blocking=True),
            self.lengths.to(device, non_blocking=True),
            None if self.token_type_ids is None else self.token_type_ids.to(device, non_blocking=True),
            self.padding_side,
        )

    @staticmethod
    def from_mask(
        input_ids: torch.Tensor, attention_mask: torch.Tensor | None, token_type_ids: torch.Tensor | None = None
    ) -> Batch:
        """A batch from tokenizer-style tensors, left- or right-padded (decided from the mask)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        lengths = attention_mask.sum(dim=1)
        # Left padding: every row's last position is real, and some row's first is not.
        left = bool(attention_mask[:, -1].all()) and not bool(attention_mask[:, 0].all())
        return Batch(input_ids, attention_mask, lengths, token_type_ids, "left" if left else "right")


def common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """Length of the token prefix all ``sequences`` share, leaving each at least one token."""
    first = sequences[0]
    limit = min(len(s) for s in sequences) - 1
    shared = max(limit, 0)
    for seq in sequences[1:]:
        i = 0
        while i < shared and seq[i] == first[i]:
            i += 1
        shared = i
        if shared == 0:
            break
    return shared


def collate(
    sequences: Sequence[Sequence[int]],
    pad_id: int,
    token_type_ids: Sequence[Sequence[int]] | None = None,
) -> Batch:
    """Right-pad ``sequences`` to the longest one (no rounding: batches are length-sorted)."""
    lengths = [len(s) for s in sequences]
    width = max(lengths)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    types = None if token_type_ids is None else torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
        if types is not None and token_type_ids is not None:
            types[row, : len(seq)] = torch.tensor(token_type_ids[row], dtype=torch.long)
    return Batch(ids, mask, torch.tensor(lengths, dtype=torch.long), types)
