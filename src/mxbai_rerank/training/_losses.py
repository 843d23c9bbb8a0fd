"""The stages' losses: pure functions from tensors to a scalar loss (no model, no data).

A score ``s`` is the raw relevance score the reranker reports: for v2, ``logit("1") - logit("0")``
at the last position of the prompt (the log-odds of answering "1" rather than "0"); for v1, the
classifier's logit. Every loss is a mean over its items.

* :func:`pointwise_loss` - binary cross-entropy of ``sigmoid(s)`` against the label in [0, 1],
  class-balanced (positives weighted by negatives / positives).
* :func:`contrastive_loss` - per query, softmax cross-entropy over ``s / temperature`` of its
  positive (column 0) and its negatives (InfoNCE with hard negatives).
* :func:`dpo_loss` - DPO on the pair (more relevant, less relevant). The composite answer
  "1 for the better document, 0 for the worse" against its swap has policy log-ratio
  ``log pi("1"|x_w) + log pi("0"|x_l) - log pi("0"|x_w) - log pi("1"|x_l) = s_w - s_l`` (the
  vocabulary normaliser cancels), so DPO's loss is ``-log sigmoid(beta * ((s_w - s_l) - (r_w - r_l)))``
  with ``r`` the reference model's scores.
* :func:`margin_loss` - ``max(0, margin - (s_w - s_l))``, the reference-free alternative.
* :func:`grpo_loss` - the clipped policy objective of GRPO on one sampled answer token per
  draw, with group-normalised advantages and a KL penalty to the reference model; pairs are
  weighted so that relevant and non-relevant ones count half each (without it, a query with one
  positive and seven negatives rewards answering "0" to everything 7 times out of 8).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "contrastive_loss",
    "dpo_loss",
    "exact_kl",
    "grpo_advantages",
    "grpo_loss",
    "grpo_rewards",
    "margin_loss",
    "pointwise_loss",
]


def pointwise_loss(scores: torch.Tensor, labels: torch.Tensor, pos_weight: float = 1.0) -> torch.Tensor:
    """``scores``, ``labels``: (N,); labels in [0, 1] (graded relevance divided by the top grade).
    ``pos_weight`` multiplies the positive term (negatives / positives balances the classes)."""
    weight = torch.tensor(float(pos_weight), device=scores.device)
    return F.binary_cross_entropy_with_logits(scores.float(), labels.to(scores.device).float(), pos_weight=weight)


def contrastive_loss(scores: torch.Tensor, mask: torch.Tensor | None = None, temperature: float = 1.0) -> torch.Tensor:
    """``scores``: (Q, 1 + K), column 0 the positive, columns 1..K its negatives; ``mask``: (Q, 1 + K)
    bool, False where a query has fewer negatives (padding). Rows without a negative are left out."""
    logits = scores.float() / temperature
    if mask is not None:
        mask = mask.to(logits.device)
        logits = logits.masked_fill(~mask, float("-inf"))
        usable = mask[:, 1:].any(dim=1)  # (Q,) rows with at least one negative
        if not bool(usable.all()):
            logits = logits[usable]
    if logits.shape[0] == 0:
        return scores.sum() * 0.0  # keeps the graph: no usable row in this batch
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target)


def dpo_loss(
    chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor, beta: float
) -> torch.Tensor:
    """All (P,): scores of the more relevant (``chosen``) and less relevant document of each pair,
    under the model being trained and under the reference (no gradient)."""
    margin = (chosen.float() - rejected.float()) - (ref_chosen.float() - ref_rejected.float()).to(chosen.device)
    return -F.logsigmoid(beta * margin).mean()


def margin_loss(chosen: torch.Tensor, rejected: torch.Tensor, margin: float) -> torch.Tensor:
    """(P,) scores -> ``mean(max(0, margin - (chosen - rejected)))``."""
    return F.relu(margin - (chosen.float() - rejected.float())).mean()


def grpo_rewards(
    samples: torch.Tensor, relevant: torch.Tensor, positive_id: int, negative_id: int, invalid: float = -1.0
) -> torch.Tensor:
    """``samples``: (B, G) sampled token ids; ``relevant``: (B,) bool. -> (B, G) float32 rewards:
    1 for the correct answer token, 0 for the wrong one, ``invalid`` for any other token."""
    correct = torch.where(relevant.to(samples.device)[:, None], positive_id, negative_id)  # (B, 1)
    wrong = torch.where(relevant.to(samples.device)[:, None], negative_id, positive_id)
    rewards = torch.full(samples.shape, float(invalid), dtype=torch.float32, device=samples.device)
    rewards = rewards.masked_fill(samples == wrong, 0.0)
    return rewards.masked_fill(samples == correct, 1.0)


def grpo_advantages(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """(B, G) rewards -> (B, G) advantages ``(r - mean) / (std + eps)`` within each group (row);
    a group whose draws all earned the same reward has zero advantage."""
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True, unbiased=False)
    return (rewards - mean) / (std + eps)


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    kl: torch.Tensor,
    *,
    clip: float = 0.2,
    kl_beta: float = 0.04,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """GRPO's objective, negated (a loss to minimise).

    ``logp``: (B, G) log-probabilities of the sampled answer tokens under the model being
    trained (with gradient); ``old_logp``: (B, G) the same under the model that sampled them
    (no gradient); ``advantages``: (B, G); ``kl``: (B,) KL(policy || reference) of each pair's
    next-token distribution (with gradient). Per draw, the PPO surrogate
    ``min(ratio * A, clip(ratio, 1 - clip, 1 + clip) * A)`` with ``ratio = exp(logp - old_logp)``;
    the loss is ``-(mean over draws and pairs of the surrogate) + kl_beta * mean(kl)``.
    ``weights``: (B,) pair weights summing to 1 (default: uniform), e.g. to balance the classes.
    """
    ratio = torch.exp(logp - old_logp.detach())
    surrogate = torch.minimum(ratio * advantages, torch.clamp(ratio, 1.0 - clip, 1.0 + clip) * advantages)
    if weights is None:
        return -surrogate.mean() + kl_beta * kl.mean()
    weights = weights.to(surrogate.device, surrogate.dtype)
    return -(surrogate.mean(dim=1) * weights).sum() + kl_beta * (kl * weights).sum()


def exact_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """(B, V) log-probabilities of the policy and the reference -> (B,) ``KL(policy || reference)``.

    Exact over the vocabulary (one position per pair, so the whole distribution is at hand),
    rather than GRPO's per-sample estimate."""
    return (logp.exp() * (logp - ref_logp.detach())).sum(dim=-1)
