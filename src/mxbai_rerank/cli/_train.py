"""``mxbai-rerank train``: fine-tune a reranker on your data (GRPO, contrastive, preference, pointwise)."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import (
    CliUsageError,
    OneLineErrorCommand,
    check_model_source,
    handle_errors,
    model_options,
    stderr_is_terminal,
)

__all__ = ["train"]

_EPILOG = """\b
Examples:
  mxbai-rerank train -m mixedbread-ai/mxbai-rerank-base-v2 --data train.jsonl --eval ./scifact \\
      --stages grpo,contrastive,preference --lora --output my-reranker/
  mxbai-rerank train -m ./my-model --data ./fiqa --split train --eval dev.jsonl --stages contrastive -o out/
  mxbai-rerank train -m mixedbread-ai/mxbai-rerank-base-v1 --data pairs.jsonl --stages pointwise,contrastive -o v1/
  mxbai-rerank train ... --output my-reranker/ --resume        # continue an interrupted run

\b
--data: JSON lines of {"query", "positive"|"positives", "negative"|"negatives", "instruction"?}
or {"query", "document", "label"} (0/1 or graded), documents as strings or JSON objects
(--rank-fields as in rank); or a BEIR-format folder (its --split qrels). Queries with fewer
than --num-negatives negatives get BM25 hard negatives from the corpus (--mine).
--eval: a BEIR folder (BM25 top --eval-top-k of its --eval-split queries reranked) or JSON lines
(each query's listed documents reranked); nDCG@10 and MRR@10 are measured before training and
after each stage and written to OUTPUT/metrics.json. The output folder loads anywhere a model
loads: mxbai-rerank rank --model OUTPUT ..."""


def _list(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    return items or None


@click.command("train", cls=OneLineErrorCommand, epilog=_EPILOG)
@model_options(family=True, dtype=False, model_required=True)
@click.option(
    "--data", "-d", required=True, metavar="FILE|DIR", help="Training data: a JSON-lines file or a BEIR folder."
)
@click.option(
    "--output", "-o", required=True, type=click.Path(), help="The model folder to write (replaced atomically)."
)
@click.option(
    "--stages",
    default="grpo,contrastive,preference",
    show_default=True,
    help="Comma-separated stages, run in this order: grpo, contrastive, preference, pointwise.",
)
@click.option("--eval", "-e", "eval_data", default=None, metavar="FILE|DIR", help="Held-out data to evaluate on.")
@click.option("--split", default="train", show_default=True, help="The qrels split of a BEIR training folder.")
@click.option("--eval-split", default="test", show_default=True, help="The qrels split of a BEIR eval folder.")
@click.option(
    "--eval-top-k", type=click.IntRange(min=1), default=100, show_default=True, help="BM25 candidates per eval query."
)
@click.option(
    "--rank-fields", default=None, help="Comma-separated fields of JSON-object documents to score, as in rank."
)
@click.option(
    "--lora/--full", default=True, show_default=True, help="LoRA adapters (merged at the end) or full fine-tuning."
)
@click.option(
    "--lora-rank", type=click.IntRange(min=1), default=16, show_default=True, help="LoRA rank r (adapter width)."
)
@click.option("--lora-alpha", type=click.IntRange(min=1), default=32, show_default=True, help="LoRA scaling alpha.")
@click.option(
    "--lora-targets", default=None, help="Comma-separated layer names to adapt [default: attention+MLP projections]."
)
@click.option("--save-adapter", is_flag=True, help="Also keep the LoRA adapter in OUTPUT/adapter.")
@click.option(
    "--learning-rate", "--lr", type=float, default=None, help="Peak learning rate [default: 2e-4 LoRA, 1e-5 full]."
)
@click.option(
    "--epochs", type=click.IntRange(min=1), default=1, show_default=True, help="Passes over each stage's data."
)
@click.option(
    "--max-steps", type=click.IntRange(min=1), default=None, help="Optimizer steps per stage (replaces --epochs)."
)
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=16, show_default=True, help="Most items per micro-batch."
)
@click.option("--grad-accum", type=click.IntRange(min=1), default=1, show_default=True, help="Micro-batches per step.")
@click.option("--warmup-ratio", type=click.FloatRange(0, 1, max_open=True), default=0.1, show_default=True,
              help="Share of each stage's steps spent warming the learning rate up.")  # fmt: skip
@click.option("--schedule", type=click.Choice(["linear", "cosine", "constant"]), default="linear", show_default=True,
              help="Learning-rate decay after the warm-up.")  # fmt: skip
@click.option(
    "--gradient-checkpointing", is_flag=True, help="Recompute activations in the backward pass (less memory)."
)
@click.option("--bf16/--no-bf16", default=None, help="bf16 autocast [default: on CUDA GPUs with bf16, off elsewhere].")
@click.option("--num-negatives", type=click.IntRange(min=1), default=7, show_default=True,
              help="Hard negatives per positive; fewer are mined.")  # fmt: skip
@click.option("--mine", type=click.Choice(["bm25", "model", "none"]), default="bm25", show_default=True,
              help="Mining: BM25, BM25 re-scored by the model (skips likely false negatives), or none.")  # fmt: skip
@click.option("--temperature", type=float, default=1.0, show_default=True, help="Contrastive softmax temperature.")
@click.option("--group-size", type=click.IntRange(min=2), default=8, show_default=True, help="GRPO answers per pair.")
@click.option("--kl-beta", type=float, default=0.04, show_default=True, help="GRPO weight of the KL penalty.")
@click.option("--preference-loss", type=click.Choice(["dpo", "margin"]), default="dpo", show_default=True,
              help="Preference stage: DPO against the stage's start, or a margin ranking loss.")  # fmt: skip
@click.option("--dpo-beta", type=float, default=0.1, show_default=True, help="DPO temperature beta.")
@click.option("--checkpoint-every", type=click.IntRange(min=0), default=0, show_default=True,
              help="Steps between checkpoints (0: at each stage's end only).")  # fmt: skip
@click.option("--resume", is_flag=True, help="Continue from the latest checkpoint of an interrupted run.")
@click.option("--keep-checkpoints", is_flag=True, help="Keep OUTPUT.checkpoints after a successful run.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of data order, sampling and dropout.")
@handle_errors
def train(
    model: str,
    device: str,
    max_length: int | None,
    max_batch_tokens: int | None,
    family: str,
    data: str,
    output: str,
    stages: str,
    eval_data: str | None,
    split: str,
    eval_split: str,
    eval_top_k: int,
    rank_fields: str | None,
    lora: bool,
    lora_rank: int,
    lora_alpha: int,
    lora_targets: str | None,
    save_adapter: bool,
    learning_rate: float | None,
    epochs: int,
    max_steps: int | None,
    batch_size: int,
    grad_accum: int,
    warmup_ratio: float,
    schedule: str,
    gradient_checkpointing: bool,
    bf16: bool | None,
    num_negatives: int,
    mine: str,
    temperature: float,
    group_size: int,
    kl_beta: float,
    preference_loss: str,
    dpo_beta: float,
    checkpoint_every: int,
    resume: bool,
    keep_checkpoints: bool,
    seed: int,
) -> None:
    """Fine-tune a reranker on your own data with the model card's stages, and save a model folder."""
    from ..training import TrainingConfig, TrainingConfigError, format_metrics_table
    from ..training import train as run_training

    if save_adapter and not lora:
        raise CliUsageError("--save-adapter needs --lora")
    try:
        config = TrainingConfig(
            stages=tuple(stages.split(",")), learning_rate=learning_rate, warmup_ratio=warmup_ratio,
            schedule=schedule, epochs=epochs, max_steps=max_steps, batch_size=batch_size,
            gradient_accumulation=grad_accum, max_batch_tokens=max_batch_tokens, seed=seed, lora=lora,
            lora_rank=lora_rank, lora_alpha=lora_alpha, lora_targets=_list(lora_targets),
            gradient_checkpointing=gradient_checkpointing, bf16=bf16,
            device=None if device == "auto" else device, max_length=max_length, num_negatives=num_negatives,
            temperature=temperature, grpo_group_size=group_size, grpo_kl_beta=kl_beta,
            preference_loss=preference_loss, preference_beta=dpo_beta, mine=mine, eval_top_k=eval_top_k,
            eval_split=eval_split, checkpoint_every=checkpoint_every, keep_checkpoints=keep_checkpoints,
            save_adapter=save_adapter, rank_fields=_list(rank_fields),
        )  # fmt: skip
    except TrainingConfigError as exc:
        raise CliUsageError(str(exc).removeprefix("invalid training config: ")) from None
    check_model_source(model)
    result = run_training(
        model, data, output, config, eval_data=eval_data, split=split,
        family=None if family == "auto" else family, resume=resume, show_progress=stderr_is_terminal(),
    )  # fmt: skip
    record = result.metrics
    info = record["data"]
    click.echo(
        f"trained {record['model']} ({record['family']}) on {info['queries']} queries, {info['pairs']} pairs "
        f"({info['mined_negatives']} mined negatives, {info['skipped_queries_without_positive']} queries skipped): "
        f"{', '.join(config.stages)} in {record['timing']['total_s']:.1f} s on {record['device']}"
    )
    evals = record["eval"]["metrics"]
    if evals:
        click.echo()
        click.echo(format_metrics_table(evals))
        click.echo()
    estimated = record["export"].get("estimated_max")
    extra = f"; estimated_max {estimated}" if estimated is not None else ""
    click.echo(f"wrote {Path(output)} (metrics.json{', adapter/' if save_adapter else ''}{extra})")
