"""How well a quantized (or otherwise approximate) model keeps a reference model's ranking."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["RankingAgreement", "kendall_tau", "ranking_agreement"]


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b of two score lists (ties count for neither side); 1.0 for fewer than two items."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"score lists differ in length: {x.shape} != {y.shape}")
    if x.size < 2:
        return 1.0
    i, j = np.triu_indices(x.size, k=1)  # every unordered pair once
    dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    concordant_minus_discordant = float(np.sum(dx * dy))
    n_x, n_y = float(np.sum(dx != 0)), float(np.sum(dy != 0))
    if n_x == 0 or n_y == 0:
        return 1.0 if n_x == n_y else 0.0
    return concordant_minus_discordant / float(np.sqrt(n_x * n_y))


@dataclass(frozen=True)
class RankingAgreement:
    """Per query: Kendall's tau and whether the top-k sets are equal; and their summaries."""

    taus: list[float]
    same_top_k: list[bool]
    top_k: int

    @property
    def min_tau(self) -> float:
        return min(self.taus)

    @property
    def same_top_k_count(self) -> int:
        return sum(self.same_top_k)

    def to_dict(self) -> dict[str, object]:
        return {
            "queries": len(self.taus),
            "kendall_tau": self.taus,
            "min_kendall_tau": self.min_tau,
            "mean_kendall_tau": float(np.mean(self.taus)),
            "top_k": self.top_k,
            "same_top_k_sets": self.same_top_k_count,
        }


def ranking_agreement(
    reference: Sequence[Sequence[float]], candidate: Sequence[Sequence[float]], top_k: int = 10
) -> RankingAgreement:
    """Compare per-query score lists (same documents, same order) of a reference and a candidate."""
    taus, same = [], []
    for ref, got in zip(reference, candidate, strict=True):
        taus.append(kendall_tau(ref, got))
        k = min(top_k, len(ref))
        # Stable sort: ties keep input order, on both sides alike.
        best_ref = set(np.argsort(-np.asarray(ref, dtype=np.float64), kind="stable")[:k].tolist())
        best_got = set(np.argsort(-np.asarray(got, dtype=np.float64), kind="stable")[:k].tolist())
        same.append(best_ref == best_got)
    return RankingAgreement(taus, same, top_k)
