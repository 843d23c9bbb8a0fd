"""Test data of the integration tests and what the library itself says about it."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

QUERY = "Who wrote 'To Kill a Mockingbird'?"
INSTRUCTION = "Find the author of the book."
# (text, metadata): titles and years rank differently from the texts, so rank_fields matter.
ROWS: list[tuple[str, dict[str, Any]]] = [
    ("'To Kill a Mockingbird' is a novel by Harper Lee published in 1960.", {"title": "Mockingbird", "year": 1960}),
    ("The novel 'Moby-Dick' was written by Herman Melville.", {"title": "Whales at sea", "year": 1851}),
    ("Harper Lee was an American novelist.", {"title": "American authors of the south", "year": 1926}),
    ("Jane Austen was an English novelist known for six novels.", {"title": "Pride", "year": 1813}),
    ("The Catcher in the Rye is a novel by J. D. Salinger.", {"title": "Rye", "year": 1951}),
    (
        "A mockingbird is a bird that copies the songs of other birds.",
        {"title": "Birds of North America", "year": 1827},
    ),
    ("Paris is the capital and largest city of France.", {"title": "Cities", "year": 2024}),
    ("Go Set a Watchman was published in 2015.", {"title": "A sequel, found in a safe deposit box", "year": 2015}),
]
TEXTS = [text for text, _ in ROWS]
METAS = [meta for _, meta in ROWS]
API_KEY = "integration-test-key"  # the live server's
ATOL = 1e-4  # server against library: same model and dtype, other batches


def library_ranking(
    reranker: Any, documents: Sequence[Any], top_n: int | None, query: str = QUERY, **options: Any
) -> list[tuple[int, float]]:
    """``(index, score)`` best first as the library ranks ``documents``; scores normalized as
    the integrations report them, order checked against the library's default ``rank``."""
    top_k = top_n or len(documents)
    plain = reranker.rank(query, list(documents), top_k=top_k, **options)
    normalized = reranker.rank(query, list(documents), top_k=top_k, normalize=True, **options)
    assert [r.index for r in plain] == [r.index for r in normalized]
    scores = [r.score for r in normalized]
    # The comparisons below need a strict order: no near-ties in the data.
    assert all(a - b > 1e-7 for a, b in itertools.pairwise(scores)), scores
    return [(r.index, r.score) for r in normalized]


def assert_matches(got: Sequence[tuple[int, float]], want: Sequence[tuple[int, float]], atol: float = 0.0) -> None:
    assert [i for i, _ in got] == [i for i, _ in want]
    for (_, g), (_, w) in zip(got, want):
        assert abs(g - w) <= atol, (g, w)
