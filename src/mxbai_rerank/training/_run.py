""":func:`train`: check everything, load the data and the model, mine, run the stages, export."""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._extras import require
from ._config import V1_STAGES, TrainingConfig, TrainingConfigError
from ._data import EvalSet, TrainingData, load_eval_set, load_training_data, mine_hard_negatives
from ._trainer import DATA_FILE, EVAL_METRICS, StepInfo, find_checkpoint

if TYPE_CHECKING:
    from .._model import TransformerReranker

__all__ = ["TrainingResult", "format_metrics_table", "train"]

logger = logging.getLogger(__name__)

DataSource = str | os.PathLike[str] | Sequence[Mapping[str, Any]] | TrainingData
_LABELS = {"ndcg@10": "nDCG@10", "mrr@10": "MRR@10"}


@dataclass
class TrainingResult:
    """What :func:`train` produced: the output folder, the run's record (``metrics.json``), the
    ``estimated_max`` written to the config (v2), and the trained reranker, in memory (merged)."""

    output_dir: Path
    metrics: dict[str, Any]
    estimated_max: float | None
    reranker: TransformerReranker


def format_metrics_table(evals: Mapping[str, Mapping[str, float]], metrics: Sequence[str] = EVAL_METRICS) -> str:
    """``before`` and ``after_<stage>`` metric rows, each with its change from ``before``."""
    if not evals:
        return "(no evaluation set)"
    header = f"{'':<22}" + "".join(f"{_LABELS.get(m, m):>18}" for m in metrics)
    lines = [header]
    before = evals.get("before", {})
    for name, values in evals.items():
        label = name.replace("after_", "after ")
        cells = []
        for m in metrics:
            value = values.get(m, float("nan"))
            change = f" ({value - before[m]:+.4f})" if name != "before" and m in before else ""
            cells.append(f"{value:.4f}{change}".rjust(18))
        lines.append(f"{label:<22}" + "".join(cells))
    return "\n".join(lines)


def _check_family(model: str, family: str | None, stages: Sequence[str], hub_kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """The family (from the config alone, no weights) and the checkpoint's declared dtype; an error
    for a model that is not a reranker and for a stage the family cannot train."""
    from .._engine import split_kwargs
    from .._engine._loading import read_config
    from .._registry import detect_family

    config = read_config(model, **split_kwargs(hub_kwargs)[0])
    chosen, _ = detect_family(model, config, family)
    causal = chosen.auto_model_class == "AutoModelForCausalLM"
    if not causal:
        bad = [s for s in stages if s not in V1_STAGES]
        if bad:
            raise TrainingConfigError(
                f"{model!r} is a {chosen.name} cross-encoder (one relevance logit): it trains with the "
                f"{' and '.join(V1_STAGES)} stages only, not {', '.join(bad)}"
                " (those need a causal LM answering '1'/'0')"
            )
    return chosen, getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)


def train(
    model: str | os.PathLike[str],
    data: DataSource,
    output_dir: str | os.PathLike[str],
    config: TrainingConfig | None = None,
    *,
    eval_data: DataSource | EvalSet | None = None,
    split: str = "train",
    family: str | None = None,
    resume: bool = False,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    on_step: Callable[[StepInfo], None] | None = None,
    show_progress: bool = False,
    **model_kwargs: Any,
) -> TrainingResult:
    """Fine-tune a reranker on your data with the stages of ``config`` and save it to ``output_dir``.

    Args:
        model: Hub id or local folder of a reranker ``mxbai_rerank.load`` accepts.
        data: A JSON-lines file, a BEIR-format folder (its ``split`` qrels), records, or
            :class:`TrainingData` (see :func:`load_training_data`).
        output_dir: The model folder to write (replaced atomically when it already holds a model).
        config: :class:`TrainingConfig` (default: GRPO, contrastive, preference with LoRA).
        eval_data: Held-out data: a BEIR folder (its ``config.eval_split``, BM25 top
            ``config.eval_top_k`` reranked) or JSON lines / records (their listed documents reranked).
            nDCG@10 and MRR@10 are measured before training and after each stage.
        split: The qrels split of a BEIR training folder.
        family: Force the reranker family (as ``load(..., family=)``).
        resume: Continue from the latest checkpoint in the checkpoint folder, if any.
        checkpoint_dir: Where checkpoints go (default: ``<output_dir>.checkpoints``, removed after a
            successful run unless ``config.keep_checkpoints``).
        on_step: Called with a :class:`StepInfo` after every optimizer step.
        show_progress: A progress bar per stage (loss, pairs/s, tokens/s).
        **model_kwargs: Hub keywords for loading (``revision``, ``token``, ``cache_dir``...).

    Everything that can be wrong with the options, the data or the model's kind fails before any
    weight is loaded.
    """
    import torch

    from .. import __version__, load
    from .._engine._loading import resolve_device
    from ._export import check_output_dir, export_model, resolve_save_dtype
    from ._trainer import Trainer

    config = config or TrainingConfig()
    config.check()
    model_id = os.fspath(model)
    output = Path(output_dir).expanduser()
    check_output_dir(output)
    chosen, checkpoint_dtype = _check_family(model_id, family, config.stages, model_kwargs)
    if config.lora:
        require("peft", "train")
    work = Path(checkpoint_dir).expanduser() if checkpoint_dir else output.with_name(output.name + ".checkpoints")
    saved_data = work / DATA_FILE
    if resume:
        find_checkpoint(work, config)  # refuses a checkpoint made with other options, before anything loads
    if resume and saved_data.is_file():
        prepared: TrainingData | None = TrainingData.load(saved_data)  # the same mined negatives as before
        training = prepared
    else:
        prepared = None
        training = load_training_data(data, split=split, rank_fields=config.rank_fields)
    if chosen.auto_model_class != "AutoModelForCausalLM" and any(g.instruction for g in training.groups):
        raise TrainingConfigError(f"instructions are only supported by the v2 models, not {chosen.name}")
    needs_mining = prepared is None and config.mine != "none"
    needs_mining = needs_mining and any(len(g.negatives) < config.num_negatives for g in training.groups)
    if needs_mining or eval_data is not None:
        require("bm25s", "eval")
    if eval_data is not None:
        require("ranx", "eval")
    eval_set = (
        eval_data
        if isinstance(eval_data, EvalSet) or eval_data is None
        else load_eval_set(
            eval_data, split=config.eval_split, top_k=config.eval_top_k, max_queries=config.eval_max_queries,
            rank_fields=config.rank_fields,
        )
    )  # fmt: skip
    logger.info("training data: %s", training.describe())

    device = resolve_device(config.device)
    bf16 = config.bf16 if config.bf16 is not None else device.type == "cuda" and torch.cuda.is_bf16_supported()
    # Frozen base weights may be bf16 under LoRA; trained weights stay float32 (autocast computes in bf16).
    dtype = torch.bfloat16 if bf16 and config.lora else torch.float32
    started = time.perf_counter()
    reranker = load(
        model_id, family=chosen, device=device, torch_dtype=dtype, compile=False,  # trained eagerly
        **({} if config.max_length is None else {"max_length": config.max_length}), **model_kwargs,
    )  # fmt: skip
    if needs_mining:
        training = mine_hard_negatives(
            training, config.num_negatives, top_k=config.mine_top_k, margin=config.mine_margin, seed=config.seed,
            scorer=reranker if config.mine == "model" else None,
        )  # fmt: skip
    work.mkdir(parents=True, exist_ok=True)
    if prepared is None:
        training.save(saved_data)
    trainer = Trainer(
        reranker, training, config, work_dir=work, eval_set=eval_set, on_step=on_step, show_progress=show_progress
    )
    record = trainer.fit(resume=resume)
    record = {
        "model": model_id,
        "family": chosen.name,
        "stages": list(config.stages),
        "eval": {"dataset": eval_set.describe() if eval_set else None, "metrics": record.pop("eval")},
        **record,
        "data": training.describe(),
        "config": config.to_dict(),
        "device": str(device),
        "bf16": bf16,
        "version": __version__,
    }
    record["timing"]["total_s"] = time.perf_counter() - started
    record = export_model(
        reranker, output, data=training, peft_model=trainer.peft_model, save_adapter=config.save_adapter,
        dtype=resolve_save_dtype(config.save_dtype, checkpoint_dtype), percentile=config.estimated_max_percentile,
        record=record, seed=config.seed,
    )  # fmt: skip
    if not config.keep_checkpoints:
        shutil.rmtree(work, ignore_errors=True)
    evals = record["eval"]["metrics"]
    if evals:
        logger.info("evaluation:\n%s", format_metrics_table(evals))
    return TrainingResult(output, record, record["export"].get("estimated_max"), reranker)
