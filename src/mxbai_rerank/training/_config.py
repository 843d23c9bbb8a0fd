"""What a training run does: :class:`TrainingConfig`, checked before any data or weight is loaded."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MINE_MODES", "STAGES", "V1_STAGES", "TrainingConfig", "TrainingConfigError", "parse_stages"]

# Every stage, in the model card's order, then the simple baseline.
STAGES: tuple[str, ...] = ("grpo", "contrastive", "preference", "pointwise")
# What a cross-encoder (v1, one relevance logit) can train: it has no answer tokens to sample
# (grpo) and no reference policy of answers (preference).
V1_STAGES: tuple[str, ...] = ("pointwise", "contrastive")
MINE_MODES: tuple[str, ...] = ("bm25", "model", "none")
_SCHEDULES = ("linear", "cosine", "constant")
_PREFERENCE_LOSSES = ("dpo", "margin")

# Padded tokens per training forward pass when none is given, by device type: a quarter of the
# inference defaults (``_registry.DEFAULT_MAX_BATCH_TOKENS``), since training keeps every
# layer's activations for the backward pass.
DEFAULT_TRAIN_BATCH_TOKENS = {"cpu": 4096, "mps": 4096, "cuda": 16384}


class TrainingConfigError(ValueError):
    """A training option that cannot work (an unknown stage, a negative learning rate...)."""


def parse_stages(stages: str | Sequence[str]) -> tuple[str, ...]:
    """``"grpo,contrastive"`` or ``["grpo", "contrastive"]`` -> a checked tuple, in the given order."""
    items = [s.strip().lower() for s in (stages.split(",") if isinstance(stages, str) else stages)]
    if not items or not all(items):
        raise TrainingConfigError(f"stages must name at least one stage ({', '.join(STAGES)}), got {stages!r}")
    unknown = [s for s in items if s not in STAGES]
    if unknown:
        raise TrainingConfigError(f"unknown stage(s) {', '.join(map(repr, unknown))}; known: {', '.join(STAGES)}")
    if len(set(items)) != len(items):
        raise TrainingConfigError(f"a stage is named twice in {stages!r}")
    return tuple(items)


@dataclass
class TrainingConfig:
    """Options of :func:`~mxbai_rerank.training.train`. Every stage runs with the same optimisation
    options, each with a fresh optimizer and learning-rate schedule.

    Units: a *step* is one optimizer update; an *item* is what one loss term sees: a pair
    (``pointwise``, ``grpo``), a query with its positive and negatives (``contrastive``) or a
    (more relevant, less relevant) pair of documents (``preference``).
    """

    stages: tuple[str, ...] = ("grpo", "contrastive", "preference")

    # -- optimisation ------------------------------------------------------------------------
    learning_rate: float | None = None  # None: 2e-4 with LoRA, 1e-5 for full fine-tuning
    weight_decay: float = 0.0
    warmup_ratio: float = 0.1  # share of a stage's steps with a linear warm-up from 0
    schedule: str = "linear"  # after the warm-up: linear decay to 0, cosine decay to 0, or constant
    epochs: int = 1  # passes over a stage's items
    max_steps: int | None = None  # steps per stage; when given, replaces ``epochs`` (the items are cycled)
    batch_size: int = 16  # most items per micro-batch (also bounded by ``max_batch_tokens``)
    gradient_accumulation: int = 1  # micro-batches per step
    max_batch_tokens: int | None = None  # padded tokens per micro-batch; None: DEFAULT_TRAIN_BATCH_TOKENS
    max_padding: float | None = None  # most padding share of a forward pass; None: the inference default
    max_grad_norm: float | None = 1.0
    seed: int = 0

    # -- model -------------------------------------------------------------------------------
    lora: bool = True  # False: full fine-tuning
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] | None = None  # None: the family's attention + MLP projections
    gradient_checkpointing: bool = False
    bf16: bool | None = None  # bf16 autocast; None: on CUDA GPUs that support it, off elsewhere
    device: str | None = None  # None: CUDA, then MPS, then the CPU
    max_length: int | None = None  # query + document tokens; None: the family's default (v2 8192, v1 512)

    # -- stages ------------------------------------------------------------------------------
    num_negatives: int = 7  # hard negatives per positive (contrastive) and per query (other stages)
    temperature: float = 1.0  # contrastive: softmax over scores / temperature (scores are logits)
    grpo_group_size: int = 8  # answers sampled per pair
    grpo_clip: float = 0.2  # PPO ratio clip epsilon
    grpo_kl_beta: float = 0.04  # weight of KL(policy || starting model)
    grpo_iterations: int = 1  # optimizer steps per sampled group (1: on-policy, as TRL's default)
    grpo_invalid_reward: float = -1.0  # reward of a token other than the two answers (correct 1, wrong 0)
    preference_loss: str = "dpo"  # dpo (against the stage's starting model) or margin (ranking loss)
    preference_beta: float = 0.1  # DPO temperature
    preference_margin: float = 1.0  # margin of the ranking loss

    # -- hard negatives ----------------------------------------------------------------------
    # Queries with fewer than num_negatives negatives are topped up: bm25 (BM25 over the corpus),
    # model (BM25, then re-scored by the starting model to skip likely false negatives) or none.
    mine: str = "bm25"
    mine_top_k: int = 30  # BM25 candidates looked at per query
    mine_margin: float = 1.0  # model re-scoring: skip candidates scored above (lowest positive - margin)

    # -- evaluation and output ---------------------------------------------------------------
    eval_top_k: int = 100  # BM25 candidates reranked per query on a BEIR eval folder
    eval_split: str = "test"
    eval_max_queries: int | None = None
    checkpoint_every: int = 0  # steps between checkpoints (0: at the end of each stage only)
    keep_checkpoints: bool = False  # keep the checkpoint folder after a successful run
    save_adapter: bool = False  # with LoRA: also save the adapter (output/adapter)
    save_dtype: str = "auto"  # auto: the starting checkpoint's dtype; float32, bfloat16, float16
    estimated_max_percentile: float = 95.0  # percentile of positive scores recorded as estimated_max
    rank_fields: tuple[str, ...] | None = None  # fields of JSON-object documents, as in ``rank``

    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes, recorded in metrics.json

    def __post_init__(self) -> None:
        self.stages = parse_stages(self.stages)
        if self.lora_targets is not None:
            self.lora_targets = tuple(self.lora_targets)
        if self.rank_fields is not None:
            self.rank_fields = (self.rank_fields,) if isinstance(self.rank_fields, str) else tuple(self.rank_fields)
        self.check()

    @property
    def lr(self) -> float:
        if self.learning_rate is not None:
            return float(self.learning_rate)
        return 2e-4 if self.lora else 1e-5

    def check(self) -> None:
        """Raise :class:`TrainingConfigError` naming every option that cannot work."""
        problems: list[str] = []

        def need(ok: bool, message: str) -> None:
            if not ok:
                problems.append(message)

        need(self.learning_rate is None or self.learning_rate > 0, "learning_rate must be positive")
        need(self.weight_decay >= 0, "weight_decay must be >= 0")
        need(0 <= self.warmup_ratio < 1, "warmup_ratio must be in [0, 1)")
        need(self.schedule in _SCHEDULES, f"schedule must be one of {', '.join(_SCHEDULES)}")
        need(self.epochs >= 1, "epochs must be >= 1")
        need(self.max_steps is None or self.max_steps >= 1, "max_steps must be >= 1")
        need(self.batch_size >= 1, "batch_size must be >= 1")
        need(self.gradient_accumulation >= 1, "gradient_accumulation must be >= 1")
        need(self.max_batch_tokens is None or self.max_batch_tokens >= 1, "max_batch_tokens must be >= 1")
        need(self.max_padding is None or 0 <= self.max_padding < 1, "max_padding must be in [0, 1)")
        need(self.max_grad_norm is None or self.max_grad_norm > 0, "max_grad_norm must be positive")
        need(self.lora_rank >= 1 and self.lora_alpha > 0, "lora_rank must be >= 1 and lora_alpha positive")
        need(0 <= self.lora_dropout < 1, "lora_dropout must be in [0, 1)")
        need(self.max_length is None or self.max_length >= 1, "max_length must be >= 1")
        need(self.num_negatives >= 1, "num_negatives must be >= 1")
        need(self.temperature > 0, "temperature must be positive")
        need(self.grpo_group_size >= 2, "grpo_group_size must be >= 2 (rewards are normalised within a group)")
        need(self.grpo_clip > 0 and self.grpo_kl_beta >= 0, "grpo_clip must be positive and grpo_kl_beta >= 0")
        need(self.grpo_iterations >= 1, "grpo_iterations must be >= 1")
        need(self.grpo_invalid_reward <= 0, "grpo_invalid_reward must be <= 0 (the wrong answer's reward)")
        need(self.preference_loss in _PREFERENCE_LOSSES, f"preference_loss must be one of {_PREFERENCE_LOSSES}")
        need(self.preference_beta > 0 and self.preference_margin >= 0, "preference_beta must be positive")
        need(self.mine in MINE_MODES, f"mine must be one of {', '.join(MINE_MODES)}")
        need(self.mine_top_k >= 1, "mine_top_k must be >= 1")
        need(self.eval_top_k >= 1, "eval_top_k must be >= 1")
        need(self.eval_max_queries is None or self.eval_max_queries >= 1, "eval_max_queries must be >= 1")
        need(self.checkpoint_every >= 0, "checkpoint_every must be >= 0")
        need(self.save_dtype in ("auto", "float32", "bfloat16", "float16"), "save_dtype: auto, float32, bfloat16...")
        need(0 < self.estimated_max_percentile <= 100, "estimated_max_percentile must be in (0, 100]")
        need(not (self.save_adapter and not self.lora), "save_adapter needs lora=True")
        if problems:
            raise TrainingConfigError("invalid training config: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["learning_rate"] = self.lr
        return json.loads(json.dumps(out, default=list))  # tuples -> lists, JSON-safe

    def resume_key(self) -> dict[str, Any]:
        """The options a resumed run must share with the checkpointed one (the rest may change)."""
        keep = (
            "stages", "learning_rate", "weight_decay", "warmup_ratio", "schedule", "epochs", "max_steps",
            "batch_size", "gradient_accumulation", "max_batch_tokens", "max_padding", "seed", "lora", "lora_rank",
            "lora_alpha", "lora_targets", "num_negatives", "temperature", "grpo_group_size", "grpo_iterations",
            "preference_loss", "max_length",
        )  # fmt: skip
        full = self.to_dict()
        return {k: full[k] for k in keep}
