"""The training loop: each stage over the package's own encoder and score head, with LoRA or full
fine-tuning, token-budget batches, gradient accumulation, a warm-up schedule, checkpoints and resume.

Batching is two-level and uses the inference batcher (:func:`~mxbai_rerank._batching.plan_batches`):

1. *items* (what one loss term sees, see :class:`~mxbai_rerank.training.TrainingConfig`) are
   shuffled per epoch (seeded), cut into mega-batches of ``16 x batch_size`` items, and each
   mega-batch is planned into micro-batches of at most ``batch_size`` items whose padded size
   ``items x sequences per item x longest`` fits ``max_batch_tokens``; micro-batch order is shuffled;
2. the distinct sequences of a micro-batch are planned again into length-sorted, right-padded
   forward passes (:func:`~mxbai_rerank._batching.collate`) with the inference padding limit, and
   their scores are put back in order. The graph of all of a micro-batch's passes is kept until
   its loss is back-propagated, so its activations stay within one token budget.

Determinism: the item order depends only on (seed, stage, epoch) and every step reseeds torch
from (seed, stage, step) before it draws anything (dropout, GRPO samples), so a run resumed from
a checkpoint takes exactly the steps an uninterrupted run takes.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import random
import shutil
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from .._batching import Batch, collate, plan_batches
from .._extras import require
from .._heads import ScoreHead, last_token_pool
from .._registry import DEFAULT_MAX_PADDING
from . import _losses
from ._config import DEFAULT_TRAIN_BATCH_TOKENS, TrainingConfig, TrainingConfigError
from ._data import EvalSet, TrainingData

if TYPE_CHECKING:
    from .._model import TransformerReranker

__all__ = ["EVAL_METRICS", "StepInfo", "Trainer", "default_lora_targets", "evaluate_set", "find_checkpoint"]

logger = logging.getLogger(__name__)

EVAL_METRICS: tuple[str, ...] = ("ndcg@10", "mrr@10")
CHECKPOINTS = "checkpoints"
DATA_FILE = "data.json"
_STATE = "state.json"
_TRAINABLE = "trainable.pt"
_OPTIMIZER = "optimizer.pt"
_SCHEDULER = "scheduler.pt"
# Items of a micro-batch may differ this much in length (the forward passes inside are planned
# again with the inference padding limit).
_ITEM_PADDING = 0.5
_MEGA_BATCHES = 16

# LoRA targets by the names of linear layers: attention and MLP projections of the common
# architectures (Qwen2/Llama, DeBERTa-v2, BERT).
_PROJECTIONS = (
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
    "query_proj", "key_proj", "value_proj", "dense", "query", "key", "value",
)  # fmt: skip


@dataclass
class StepInfo:
    """One optimizer step, as the ``on_step`` callback and the progress bar see it."""

    stage: str
    stage_index: int
    step: int  # optimizer steps done in this stage, this one included
    total_steps: int
    loss: float
    learning_rate: float
    pairs: int  # (query, document) sequences run forward and backward in this step
    tokens: int  # their real (unpadded) tokens
    seconds: float


@dataclass
class _Plan:
    """A stage's items: ``items[i]`` holds sequence ids, -1 where a query has fewer negatives.
    pointwise, grpo, contrastive: (positive, its negatives...); preference: (better, worse)."""

    stage: str
    items: list[tuple[int, ...]]
    width: int  # sequences per item


def _mix(*parts: int) -> int:
    """A 31-bit seed from integers (stable across runs and Python versions)."""
    return zlib.crc32(",".join(str(p) for p in parts).encode()) & 0x7FFFFFFF


def default_lora_targets(model: torch.nn.Module) -> list[str]:
    """Names of the attention and MLP projection layers LoRA adapts in ``model``."""
    present = {name.rsplit(".", 1)[-1] for name, mod in model.named_modules() if isinstance(mod, torch.nn.Linear)}
    targets = [name for name in _PROJECTIONS if name in present]
    if not targets:
        raise TrainingConfigError(f"no attention/MLP projection layers found for LoRA; layers: {sorted(present)}")
    return targets


def evaluate_set(
    reranker: TransformerReranker, eval_set: EvalSet, metrics: tuple[str, ...] = EVAL_METRICS
) -> dict[str, float]:
    """Metric means of ``reranker`` on ``eval_set``: its candidates reranked per instruction
    (:func:`mxbai_rerank.evaluation.rerank_candidates`) and scored by
    :func:`mxbai_rerank.evaluation.compute_metrics`."""
    from ..evaluation import compute_metrics, rerank_candidates

    by_instruction: dict[str | None, dict[str, list[tuple[str, float]]]] = {}
    for qid, docs in eval_set.candidates.items():
        by_instruction.setdefault(eval_set.instructions.get(qid), {})[qid] = docs
    run: dict[str, list[tuple[str, float]]] = {}
    for instruction, candidates in by_instruction.items():
        run.update(rerank_candidates(reranker, eval_set.dataset, candidates, instruction=instruction))
    return compute_metrics(eval_set.dataset.qrels, run, metrics).mean


class Trainer:
    """Trains a loaded reranker in place (see the module docstring); :meth:`fit` runs the stages.

    ``reranker`` must come from :func:`mxbai_rerank.load` (or a reranker class) in the dtype to
    train in. With LoRA the adapter is injected into its modules, so ``reranker`` scores with
    the adapter on; :attr:`peft_model` is the wrapper to merge or save.
    """

    def __init__(
        self,
        reranker: TransformerReranker,
        data: TrainingData,
        config: TrainingConfig,
        *,
        work_dir: Path,
        eval_set: EvalSet | None = None,
        on_step: Callable[[StepInfo], None] | None = None,
        show_progress: bool = False,
    ) -> None:
        self.reranker = reranker
        self.engine = reranker.engine
        self.family = self.engine.family
        self.data = data
        self.config = config
        self.work_dir = Path(work_dir)
        self.eval_set = eval_set
        self.on_step = on_step
        self.show_progress = show_progress
        self.device = self.engine.device
        if config.bf16 is None:
            self.bf16 = self.device.type == "cuda" and torch.cuda.is_bf16_supported()
        else:
            self.bf16 = bool(config.bf16)
        self.max_batch_tokens = config.max_batch_tokens or DEFAULT_TRAIN_BATCH_TOKENS.get(self.device.type, 4096)
        self.max_padding = (
            config.max_padding if config.max_padding is not None else DEFAULT_MAX_PADDING.get(self.device.type, 0.1)
        )
        self.base_model: torch.nn.Module = self.engine.model
        self.head: ScoreHead = self.engine.head
        self.answer_ids: tuple[int, int] | None = None
        if hasattr(self.head, "lm_head") and hasattr(self.engine.encoder, "positive_id"):
            self.answer_ids = (int(self.engine.encoder.positive_id), int(self.engine.encoder.negative_id))
        needs_answers = [s for s in config.stages if s == "grpo"]
        if needs_answers and self.answer_ids is None:
            raise TrainingConfigError(
                f"the grpo stage needs a causal-LM reranker with answer tokens, not {self.family.name}"
            )
        if config.gradient_checkpointing:
            self.base_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        # The reference of GRPO's KL penalty is the starting model: with LoRA the same modules with
        # the adapter disabled; with full fine-tuning a frozen copy (one more model in memory).
        self.ref_head: ScoreHead | None = None
        if "grpo" in config.stages and not config.lora:
            frozen = copy.deepcopy(self.base_model).eval().requires_grad_(False)
            self.ref_head = self.family.build_head(frozen, self.engine.encoder)
        self.peft_model: Any = None
        if config.lora:
            self.peft_model = self._apply_lora()
            self.model: torch.nn.Module = self.peft_model
        else:
            self.model = self.base_model.requires_grad_(True)
        self.pad_id = self.engine.pad_token_id
        self._encode()
        self.history: dict[str, list[float]] = {}
        self.metrics: dict[str, dict[str, float]] = {}
        self.timing: dict[str, float] = {}
        self.throughput: dict[str, dict[str, float]] = {}

    # -- setup -------------------------------------------------------------------------------
    def _apply_lora(self) -> Any:
        peft = require("peft", "train")
        cfg = self.config
        targets = list(cfg.lora_targets) if cfg.lora_targets else default_lora_targets(self.base_model)
        # A cross-encoder's classifier is new for every task: it trains in full next to the adapter.
        modules_to_save = (
            ["classifier"] if isinstance(getattr(self.base_model, "classifier", None), torch.nn.Module) else None
        )
        lora = peft.LoraConfig(
            r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, target_modules=targets,
            modules_to_save=modules_to_save, bias="none",
        )  # fmt: skip
        torch.manual_seed(_mix(cfg.seed, "lora"))  # LoRA's A matrices start random: the same in every run
        try:
            with warnings.catch_warnings():  # peft asks transformers' deprecated is_gradient_checkpointing
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
                model = peft.get_peft_model(self.base_model, lora)
        except ValueError as exc:
            raise TrainingConfigError(f"cannot apply LoRA to {targets}: {exc}") from exc
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        logger.info(
            "LoRA on %s: %d of %d parameters train (%.2f%%)", targets, trainable, total, 100 * trainable / total
        )
        return model

    def _encode(self) -> None:
        """Token ids of every (query, document) pair once; ``self.index[g][d]`` is its sequence id."""
        self.seqs: list[list[int]] = []
        self.types: list[list[int]] | None = []
        self.index: list[list[int]] = []
        for group in self.data.groups:
            encoded = self.engine.encoder.encode(
                [group.query] * len(group.documents), group.documents, group.instruction
            )
            start = len(self.seqs)
            self.seqs.extend(encoded.input_ids)
            if encoded.token_type_ids is None or self.types is None:
                self.types = None
            else:
                self.types.extend(encoded.token_type_ids)
            self.index.append(list(range(start, len(self.seqs))))
        # Graded relevance of every sequence, scaled to [0, 1] by the top grade of the data.
        top = max((max(g.labels) for g in self.data.groups), default=1.0) or 1.0
        self.seq_label = [label / top for g in self.data.groups for label in g.labels]

    # -- items -------------------------------------------------------------------------------
    def _negatives(self, g: int) -> list[int]:
        """Sequence ids of a query's negatives, explicit ones first, then mined (at most num_negatives)."""
        group = self.data.groups[g]
        return [self.index[g][i] for i in group.negatives][: self.config.num_negatives]

    def plan(self, stage: str) -> _Plan:
        groups = self.data.groups
        if stage in ("pointwise", "grpo", "contrastive"):
            # One item per positive: the positive and its query's negatives. Every micro-batch then
            # holds both classes, however document length (which orders the batches) correlates
            # with relevance.
            width = 1 + self.config.num_negatives
            items = []
            for g, group in enumerate(groups):
                negatives = self._negatives(g)
                if not negatives and stage == "contrastive":
                    continue
                for i in group.positives:
                    row = (self.index[g][i], *negatives)
                    items.append(row + (-1,) * (width - len(row)))
            if not items:
                raise TrainingConfigError("the contrastive stage needs negatives, and no query has one (mine='none'?)")
            return _Plan(stage, items, width=width)
        if stage == "preference":
            items = []
            for g, group in enumerate(groups):
                negatives = self._negatives(g)
                positives = sorted(group.positives, key=lambda i: -group.labels[i])
                for a, i in enumerate(positives):
                    items.extend((self.index[g][i], s) for s in negatives)
                    # Graded positives: the higher grade is preferred to each lower one.
                    items.extend(
                        (self.index[g][i], self.index[g][j])
                        for j in positives[a + 1 :]
                        if group.labels[j] < group.labels[i]
                    )
            if not items:
                raise TrainingConfigError("the preference stage needs pairs of a more and a less relevant document")
            return _Plan(stage, items, 2)
        raise TrainingConfigError(f"unknown stage {stage!r}")

    def _epoch_batches(self, stage_index: int, plan: _Plan, epoch: int) -> list[list[int]]:
        rng = random.Random(_mix(self.config.seed, stage_index, epoch))
        order = list(range(len(plan.items)))
        rng.shuffle(order)
        lengths = [max(len(self.seqs[s]) for s in item if s >= 0) for item in plan.items]
        mega = self.config.batch_size * _MEGA_BATCHES
        budget = max(1, self.max_batch_tokens // plan.width)
        batches: list[list[int]] = []
        for start in range(0, len(order), mega):
            chunk = order[start : start + mega]
            planned = plan_batches(
                [lengths[i] for i in chunk], max_tokens=budget, max_batch_size=self.config.batch_size,
                max_padding=_ITEM_PADDING,
            )  # fmt: skip
            batches.extend([chunk[j] for j in b] for b in planned)
        rng.shuffle(batches)
        return batches

    def _micro_batches(self, stage_index: int, plan: _Plan) -> Iterator[list[int]]:
        epoch = 0
        while self.config.max_steps is not None or epoch < self.config.epochs:
            yield from self._epoch_batches(stage_index, plan, epoch)
            epoch += 1

    def _data_steps(self, stage_index: int, plan: _Plan, iterations: int) -> int:
        if self.config.max_steps is not None:
            return math.ceil(self.config.max_steps / iterations)
        micro = sum(len(self._epoch_batches(stage_index, plan, e)) for e in range(self.config.epochs))
        return math.ceil(micro / self.config.gradient_accumulation)

    # -- forward -----------------------------------------------------------------------------
    def _autocast(self) -> Any:
        if not self.bf16:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def forward(self, seq_ids: list[int], *, logits: bool = False, head: ScoreHead | None = None) -> torch.Tensor:
        """(S,) float32 scores of ``seq_ids`` in order, or with ``logits`` the (S, V) float32
        next-token logits at each sequence's last position (answer-token heads only)."""
        head = head or self.head
        lengths = [len(self.seqs[s]) for s in seq_ids]
        planned = plan_batches(
            lengths, max_tokens=self.max_batch_tokens, max_batch_size=len(seq_ids), max_padding=self.max_padding
        )
        parts, order = [], []
        for rows in planned:
            ids = [self.seqs[seq_ids[r]] for r in rows]
            types = None if self.types is None else [self.types[seq_ids[r]] for r in rows]
            batch = collate(ids, self.pad_id, types).to(self.device)
            with self._autocast():
                parts.append(self._run_head(head, batch, logits))
            order.extend(rows)
        out = torch.cat(parts)  # rows in planned order
        inverse = torch.empty(len(order), dtype=torch.long)
        inverse[torch.tensor(order, dtype=torch.long)] = torch.arange(len(order))
        return out.index_select(0, inverse.to(out.device))

    @staticmethod
    def _run_head(head: Any, batch: Batch, logits: bool) -> torch.Tensor:
        if not logits:
            return head(batch)  # (B,)
        # The answer-token head's forward, keeping the whole last-position distribution.
        hidden = head.backbone(input_ids=batch.input_ids, use_cache=False).last_hidden_state  # (B, T, H)
        return head.lm_head(last_token_pool(hidden, batch)).float()  # (B, V)

    def _reference_logits(self, seq_ids: list[int]) -> torch.Tensor:
        """(S, V) logits of the starting model (no gradient)."""
        with torch.no_grad():
            if self.peft_model is not None:
                with self.peft_model.disable_adapter():
                    return self.forward(seq_ids, logits=True)
            assert self.ref_head is not None
            return self.forward(seq_ids, logits=True, head=self.ref_head)

    # -- losses ------------------------------------------------------------------------------
    def _micro_loss(
        self, plan: _Plan, rows: list[int], rollout: Any, generator: torch.Generator, reference: torch.Tensor | None
    ) -> tuple[torch.Tensor, int, int, Any]:
        """(loss, sequences, real tokens, GRPO rollout to reuse) of one micro-batch of items ``rows``."""
        cfg = self.config
        items = [plan.items[r] for r in rows]
        distinct = list(dict.fromkeys(s for item in items for s in item if s >= 0))
        position = {s: i for i, s in enumerate(distinct)}
        tokens = sum(len(self.seqs[s]) for s in distinct)
        if plan.stage == "grpo":
            loss, rollout = self._grpo_loss(distinct, rollout, generator)
            return loss, len(distinct), tokens, rollout
        scores = self.forward(distinct)  # (S,)
        if plan.stage == "pointwise":
            labels = torch.tensor([self.seq_label[s] for s in distinct], device=scores.device)  # (S,)
            positives = int((labels > 0).sum())
            balance = (len(distinct) - positives) / max(positives, 1)  # class-balanced within the micro-batch
            return _losses.pointwise_loss(scores, labels, max(balance, 1.0)), len(distinct), tokens, None
        if plan.stage == "contrastive":
            grid = torch.tensor(
                [[position.get(s, 0) for s in item] for item in items], device=scores.device
            )  # (Q, 1+K)
            mask = torch.tensor([[s >= 0 for s in item] for item in items], device=scores.device)
            loss = _losses.contrastive_loss(scores[grid], mask, cfg.temperature)
            return loss, len(distinct), tokens, None
        chosen = scores[torch.tensor([position[item[0]] for item in items], device=scores.device)]
        rejected = scores[torch.tensor([position[item[1]] for item in items], device=scores.device)]
        if cfg.preference_loss == "margin":
            return _losses.margin_loss(chosen, rejected, cfg.preference_margin), len(distinct), tokens, None
        assert reference is not None
        ref = reference[torch.tensor(rows)].to(scores.device)  # (P, 2)
        loss = _losses.dpo_loss(chosen, rejected, ref[:, 0], ref[:, 1], cfg.preference_beta)
        return loss, len(distinct), tokens, None

    def _grpo_loss(self, distinct: list[int], rollout: Any, generator: torch.Generator) -> tuple[torch.Tensor, Any]:
        cfg = self.config
        assert self.answer_ids is not None
        logits = self.forward(distinct, logits=True)  # (S, V): one group of draws per distinct sequence
        logp = torch.log_softmax(logits, dim=-1)
        if rollout is None:
            # Draw G answers per pair from the full next-token distribution of the current model.
            with torch.no_grad():
                probs = logp.detach().exp()
                samples = torch.multinomial(probs, cfg.grpo_group_size, replacement=True, generator=generator)  # (S, G)
                relevant = torch.tensor([self.seq_label[s] > 0 for s in distinct], device=samples.device)
                rewards = _losses.grpo_rewards(samples, relevant, *self.answer_ids, invalid=cfg.grpo_invalid_reward)
                advantages = _losses.grpo_advantages(rewards)
                old_logp = logp.detach().gather(1, samples)
                ref_logp = torch.log_softmax(self._reference_logits(distinct), dim=-1)
                weights = _class_balance(relevant)
            rollout = (samples, advantages, old_logp, ref_logp, rewards, weights)
        samples, advantages, old_logp, ref_logp, _, weights = rollout
        kl = _losses.exact_kl(logp, ref_logp)  # (S,)
        loss = _losses.grpo_loss(
            logp.gather(1, samples), old_logp, advantages, kl, clip=cfg.grpo_clip, kl_beta=cfg.grpo_kl_beta,
            weights=weights,
        )  # fmt: skip
        return loss, rollout

    def _reference_scores(self, stage_index: int, plan: _Plan) -> torch.Tensor:
        """(P, 2) scores of each preference pair under the model at the start of the stage
        (DPO's reference), computed once and kept in the work folder for a resumed run."""
        path = self.work_dir / f"reference-stage{stage_index}.pt"
        if path.is_file():
            return torch.load(path, map_location="cpu")
        flat = list(dict.fromkeys(s for item in plan.items for s in item))
        was_training = self.model.training
        self.model.eval()
        scores = []
        with torch.no_grad():
            for start in range(0, len(flat), 256):
                scores.append(self.forward(flat[start : start + 256]).float().cpu())
        self.model.train(was_training)
        by_seq = dict(zip(flat, torch.cat(scores).tolist()))
        reference = torch.tensor([[by_seq[a], by_seq[b]] for a, b in plan.items], dtype=torch.float32)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        torch.save(reference, path)
        return reference

    # -- the loop ----------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float] | None:
        if self.eval_set is None:
            return None
        return evaluate_set(self.reranker, self.eval_set)

    def fit(self, *, resume: bool = False) -> dict[str, Any]:
        """Run every stage (after the checkpointed ones when resuming); returns the run's record."""
        state = self._latest_checkpoint() if resume else None
        start_stage, start_step = 0, 0
        checkpoint: Path | None = None
        if state is None:
            if resume:
                logger.info("no checkpoint in %s: starting from the beginning", self.work_dir / CHECKPOINTS)
            shutil.rmtree(self.work_dir / CHECKPOINTS, ignore_errors=True)
            for stale in self.work_dir.glob("reference-stage*.pt"):
                stale.unlink()
            before = self.evaluate()
            if before is not None:
                self.metrics["before"] = before
        else:
            checkpoint, saved = state
            self._restore(checkpoint, saved)
            start_stage, start_step = int(saved["stage_index"]), int(saved["step"])
            if saved["complete"]:
                start_stage, start_step, checkpoint = start_stage + 1, 0, None
            logger.info(
                "resuming from %s (stage %d, step %d)", checkpoint or "a completed stage", start_stage, start_step
            )
        for stage_index, stage in enumerate(self.config.stages):
            if stage_index < start_stage:
                continue
            resume_from = checkpoint if stage_index == start_stage else None
            started = time.perf_counter()
            self._run_stage(stage_index, stage, start_step if stage_index == start_stage else 0, resume_from)
            self.timing[f"{stage}_s"] = self.timing.get(f"{stage}_s", 0.0) + time.perf_counter() - started
            after = self.evaluate()
            if after is not None:
                self.metrics[f"after_{stage}"] = after
            self._save_checkpoint(stage_index, stage, None, None, step=-1, complete=True)
        return {"eval": self.metrics, "train_loss": self.history, "timing": self.timing, "throughput": self.throughput}

    def _run_stage(self, stage_index: int, stage: str, start_step: int, checkpoint: Path | None) -> None:
        cfg = self.config
        plan = self.plan(stage)
        iterations = cfg.grpo_iterations if stage == "grpo" else 1
        reference = (
            self._reference_scores(stage_index, plan)
            if stage == "preference" and cfg.preference_loss == "dpo"
            else None
        )
        total = self._data_steps(stage_index, plan, iterations) * iterations
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(cfg, total))
        if checkpoint is not None:
            optimizer.load_state_dict(torch.load(checkpoint / _OPTIMIZER, map_location=self.device, weights_only=False))
            scheduler.load_state_dict(torch.load(checkpoint / _SCHEDULER, weights_only=False))
        micro = self._micro_batches(stage_index, plan)
        accum = cfg.gradient_accumulation
        for _ in range((start_step // iterations) * accum):  # the micro-batches the checkpointed run consumed
            next(micro, None)
        history = self.history.setdefault(stage, [])
        del history[start_step:]
        if stage == "grpo":
            del self.history.setdefault("grpo_reward", [])[start_step:]
        generator = torch.Generator(device=self.device)
        logger.info("stage %s: %d items, %d steps", stage, len(plan.items), total)
        self.model.train()
        step, pairs_done, tokens_done, seconds = start_step, 0, 0, 0.0
        with tqdm(total=total, initial=start_step, desc=stage, unit="step", disable=not self.show_progress) as bar:
            while step < total:
                data_step = step // iterations
                seed = _mix(cfg.seed, stage_index, data_step)
                torch.manual_seed(seed)
                generator.manual_seed(seed)
                batches = [b for b in (next(micro, None) for _ in range(accum)) if b is not None]
                if not batches:
                    break
                rollouts: list[Any] = [None] * len(batches)
                for _ in range(iterations):
                    started = time.perf_counter()
                    loss_sum, pairs, tokens = 0.0, 0, 0
                    for k, rows in enumerate(batches):
                        loss, n_pairs, n_tokens, rollouts[k] = self._micro_loss(
                            plan, rows, rollouts[k], generator, reference
                        )
                        if not torch.isfinite(loss):
                            raise FloatingPointError(f"stage {stage}, step {step + 1}: the loss is {loss.item()}")
                        (loss / len(batches)).backward()
                        loss_sum += loss.item() / len(batches)
                        pairs += n_pairs
                        tokens += n_tokens
                    if cfg.max_grad_norm is not None:
                        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                    lr = scheduler.get_last_lr()[0]
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    step += 1
                    elapsed = time.perf_counter() - started
                    history.append(loss_sum)
                    if stage == "grpo":  # the mean reward of the step's draws (its loss hovers near 0)
                        # class-balanced, as the loss weighs the pairs
                        rewards = sum(float((r[4].mean(dim=1) * r[5]).sum()) for r in rollouts) / len(rollouts)
                        self.history.setdefault("grpo_reward", []).append(rewards)
                    pairs_done, tokens_done, seconds = pairs_done + pairs, tokens_done + tokens, seconds + elapsed
                    bar.update(1)
                    bar.set_postfix(
                        loss=f"{loss_sum:.4f}", pairs_s=f"{pairs_done / max(seconds, 1e-9):.1f}",
                        tok_s=f"{tokens_done / max(seconds, 1e-9):.0f}",
                    )  # fmt: skip
                    if (
                        cfg.checkpoint_every
                        and step % cfg.checkpoint_every == 0
                        and step % iterations == 0
                        and step < total
                    ):
                        self._save_checkpoint(stage_index, stage, optimizer, scheduler, step=step, complete=False)
                    if self.on_step is not None:
                        self.on_step(StepInfo(stage, stage_index, step, total, loss_sum, lr, pairs, tokens, elapsed))
        self.model.eval()
        if seconds > 0:
            self.throughput[stage] = {
                "pairs_per_s": pairs_done / seconds, "tokens_per_s": tokens_done / seconds, "steps": step - start_step,
            }  # fmt: skip

    # -- checkpoints -------------------------------------------------------------------------
    def _trainable_state(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().cpu().clone() for n, p in self.model.named_parameters() if p.requires_grad}

    def _save_checkpoint(
        self, stage_index: int, stage: str, optimizer: Any, scheduler: Any, *, step: int, complete: bool
    ) -> Path:
        root = self.work_dir / CHECKPOINTS
        root.mkdir(parents=True, exist_ok=True)
        name = f"stage{stage_index}-{'done' if complete else f'step{step:07d}'}"
        final = root / name
        tmp = root / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        torch.save(self._trainable_state(), tmp / _TRAINABLE)
        if optimizer is not None:
            torch.save(optimizer.state_dict(), tmp / _OPTIMIZER)
            torch.save(scheduler.state_dict(), tmp / _SCHEDULER)
        state = {
            "stage_index": stage_index, "stage": stage, "step": step, "complete": complete,
            "config": self.config.resume_key(), "model": self.reranker.model_name_or_path,
            "metrics": self.metrics, "history": self.history, "timing": self.timing, "throughput": self.throughput,
        }  # fmt: skip
        (tmp / _STATE).write_text(json.dumps(state), encoding="utf-8")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)  # a checkpoint is complete or absent, never half written
        for old in root.iterdir():
            if old != final and not old.name.startswith("."):
                shutil.rmtree(old, ignore_errors=True)
        logger.info("checkpoint %s", final)
        return final

    def _latest_checkpoint(self) -> tuple[Path, dict[str, Any]] | None:
        return find_checkpoint(self.work_dir, self.config)

    def _restore(self, checkpoint: Path, state: dict[str, Any]) -> None:
        saved = torch.load(checkpoint / _TRAINABLE, map_location=self.device)
        expected = {n for n, p in self.model.named_parameters() if p.requires_grad}
        if set(saved) != expected:
            raise TrainingConfigError(
                f"cannot resume from {checkpoint}: its trainable parameters differ from this model's"
            )
        self.model.load_state_dict(saved, strict=False)
        self.metrics = dict(state.get("metrics", {}))
        self.history = {k: list(v) for k, v in state.get("history", {}).items()}
        self.timing = dict(state.get("timing", {}))
        self.throughput = dict(state.get("throughput", {}))


def find_checkpoint(work_dir: Path, config: TrainingConfig) -> tuple[Path, dict[str, Any]] | None:
    """The latest checkpoint in ``work_dir`` and its state, or ``None``; a :class:`TrainingConfigError`
    when it was made with options a resumed run must share (``TrainingConfig.resume_key``)."""
    root = Path(work_dir) / CHECKPOINTS
    found = []
    for path in root.glob("stage*") if root.is_dir() else []:
        try:
            state = json.loads((path / _STATE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        found.append(((state["stage_index"], state["complete"], state["step"]), path, state))
    if not found:
        return None
    _, path, state = max(found, key=lambda f: f[0])
    if state.get("config") != config.resume_key():
        changed = sorted(k for k, v in config.resume_key().items() if state.get("config", {}).get(k) != v)
        raise TrainingConfigError(
            f"cannot resume from {path}: the run was started with other options ({', '.join(changed)}); "
            "start again without resume, or use the same options"
        )
    return path, state


def _class_balance(relevant: torch.Tensor) -> torch.Tensor:
    """(S,) bool -> (S,) weights summing to 1, half on the relevant pairs and half on the others
    (all on one class when the other is absent)."""
    rel = relevant.float()
    n_rel, n_irr = rel.sum(), (1 - rel).sum()
    if n_rel == 0 or n_irr == 0:
        return torch.full_like(rel, 1.0 / rel.numel())
    return rel * (0.5 / n_rel) + (1 - rel) * (0.5 / n_irr)


def _schedule(config: TrainingConfig, total: int) -> Callable[[int], float]:
    """Learning-rate factor before step ``s`` (0-based): a linear warm-up over the first
    ``warmup_ratio`` of the steps (``(s + 1) / (warm + 1)``, so no step is wasted at 0), then
    linear or cosine decay towards 0, or constant."""
    warm = round(config.warmup_ratio * total)

    def factor(s: int) -> float:
        if s < warm:
            return (s + 1) / (warm + 1)
        if config.schedule == "constant":
            return 1.0
        progress = (s - warm) / max(1, total - warm)
        if config.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return max(0.0, 1.0 - progress)

    return factor
