"""Token-budget batch planning, right padding and shared-prefix detection."""

from __future__ import annotations

import random

import pytest

from mxbai_rerank._batching import collate, common_prefix_length, plan_batches


@pytest.mark.parametrize("seed", range(20))
def test_plan_batches_invariants(seed: int) -> None:
    rng = random.Random(seed)
    lengths = [rng.randint(1, 600) for _ in range(rng.randint(1, 200))]
    budget, cap = rng.choice([256, 1024, 8192]), rng.choice([1, 4, 32, 1000])
    slack = rng.choice([0.0, 0.1, 0.3, 0.9])
    batches = plan_batches(lengths, max_tokens=budget, max_batch_size=cap, max_padding=slack)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))  # every pair exactly once
    for batch in batches:
        assert 1 <= len(batch) <= cap
        longest = max(lengths[i] for i in batch)
        assert len(batch) * longest <= budget or len(batch) == 1
        assert all(lengths[i] >= (1 - slack) * longest for i in batch)
    # Longest first: batch maxima never increase.
    maxima = [max(lengths[i] for i in b) for b in batches]
    assert maxima == sorted(maxima, reverse=True)


def test_length_sorting_avoids_padding_short_documents_to_the_longest() -> None:
    lengths = [500] + [20] * 40 + [19, 18]
    batches = plan_batches(lengths, max_tokens=1000, max_batch_size=64, max_padding=0.1)
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    # Upstream pads all 43 to 500 tokens (21,500); here only the 19s and 18 get a pad or two.
    assert padded == sum(lengths) + 1 + 2
    assert [len(b) for b in batches] == [1, 43 - 1]


def test_bad_budget() -> None:
    with pytest.raises(ValueError):
        plan_batches([1], max_tokens=0, max_batch_size=1)
    with pytest.raises(ValueError):
        plan_batches([1], max_tokens=10, max_batch_size=1, max_padding=1.0)


def test_collate_right_pads() -> None:
    batch = collate([[5, 6, 7], [8]], pad_id=0)
    assert batch.input_ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch.lengths.tolist() == [3, 1]


@pytest.mark.parametrize(
    ("sequences", "expected"),
    [
        ([[1, 2, 3, 4], [1, 2, 3, 5]], 3),
        ([[1, 2, 3], [1, 2, 3, 4]], 2),  # every row keeps at least one token of its own
        ([[1, 2], [3, 4]], 0),
        ([[7]], 0),
        ([[1, 2, 9], [1, 2, 8], [1, 3, 8]], 1),
    ],
)
def test_common_prefix_length(sequences: list[list[int]], expected: int) -> None:
    assert common_prefix_length(sequences) == expected
