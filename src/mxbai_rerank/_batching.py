"""Token-budget batching: sort by length, pack, pad right, restore order afterwards."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


def plan_batches(lengths: Sequence[int], *, max_tokens: int, max_batch_size: int) -> list[list[int]]:
    """Group indices into batches, longest sequences first.

    Invariants: every index appears exactly once; within a batch ``len(batch) * max(len)``
    (the padded size) is at most ``max_tokens`` and ``len(batch) <= max_batch_size``, except
    that a single sequence longer than ``max_tokens`` forms a batch of its own.
    """
    if max_tokens <= 0 or max_batch_size <= 0:
        raise ValueError("max_tokens and max_batch_size must be positive")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        longest_if_added = max(longest, lengths[i])
        if current and (len(current) >= max_batch_size or (len(current) + 1) * longest_if_added > max_tokens):
            batches.append(current)
            current, longest_if_added = [], lengths[i]
        current.append(i)
        longest = longest_if_added
    if current:
        batches.append(current)
    return batches


@dataclass
class Batch:
    """A right-padded batch. ``input_ids``: (B, T) int64; ``lengths``: (B,) int64, each >= 1."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    lengths: torch.Tensor
    token_type_ids: torch.Tensor | None = None
    # Leading tokens identical in every row, always < min(lengths) (see common_prefix_length).
    shared_prefix: int = 0

    def to(self, device: torch.device) -> Batch:
        return Batch(
            self.input_ids.to(device, non_blocking=True),
            self.attention_mask.to(device, non_blocking=True),
            self.lengths.to(device, non_blocking=True),
            None if self.token_type_ids is None else self.token_type_ids.to(device, non_blocking=True),
            self.shared_prefix,
        )


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
    return Batch(ids, mask, torch.tensor(lengths, dtype=torch.long), types, common_prefix_length(sequences))
