"""The output folder: LoRA merged into the weights, the tokenizer, the config marker with the family
and ``estimated_max``, ``metrics.json``; written to a temporary sibling folder, then renamed.

``estimated_max`` (v2 families): ``normalize=True`` reports ``sigmoid(raw - estimated_max / 2)``,
so ``estimated_max`` is the top of the model's own raw-score range: the trained model's
``estimated_max_percentile`` (default 95th) percentile of its raw scores on the training data's
positive pairs (at most :data:`ESTIMATED_MAX_PAIRS` of them, a seeded sample). A typical relevant
document then normalises to well above 0.5 and the midpoint sits halfway between "no preference"
(raw 0, logit("1") == logit("0")) and a confident "1", as for the published models
(base-v2: 9.0, large-v2: 12.0).
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .._registry import CONFIG_MARKER
from ..families.mxbai_v2 import MxbaiV2Family
from ._config import TrainingConfigError
from ._data import TrainingData

if TYPE_CHECKING:
    from .._model import TransformerReranker

__all__ = [
    "ADAPTER_DIR",
    "METRICS_FILE",
    "check_output_dir",
    "estimate_max",
    "export_model",
    "replace_dir",
    "resolve_save_dtype",
]

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
ADAPTER_DIR = "adapter"
ESTIMATED_MAX_PAIRS = 2048
# Pairs scored with the adapter on and after merging, to check the merge (recorded in metrics.json).
_MERGE_CHECK_PAIRS = 32
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def check_output_dir(output: Path) -> None:
    """Refuse an output path that must not be replaced: a file, or a non-empty folder that is not a model."""
    if output.exists() and not output.is_dir():
        raise TrainingConfigError(f"output {str(output)!r} exists and is not a directory")
    if output.is_dir() and any(output.iterdir()) and not (output / "config.json").is_file():
        raise TrainingConfigError(
            f"output {str(output)!r} is a non-empty folder without a model (config.json); refusing to replace it"
        )


def replace_dir(tmp: Path, target: Path) -> None:
    """Move the finished folder ``tmp`` to ``target``, replacing an earlier one only once ``tmp`` is
    complete: ``target`` always holds either the old folder or the new one."""
    if not target.exists():
        os.replace(tmp, target)
        return
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(target, old)
    try:
        os.replace(tmp, target)
    except OSError:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _sample_pairs(data: TrainingData, limit: int, positives_only: bool, seed: int) -> list[tuple[str, str, str | None]]:
    pairs = [
        (g.query, g.documents[i], g.instruction)
        for g in data.groups
        for i in (g.positives if positives_only else range(len(g.documents)))
    ]
    if len(pairs) > limit:
        pairs = random.Random(seed).sample(pairs, limit)
    return pairs


def score_pairs(reranker: TransformerReranker, pairs: list[tuple[str, str, str | None]]) -> np.ndarray:
    """Raw scores of (query, document, instruction) triples, in order."""
    out = np.zeros(len(pairs), dtype=np.float64)
    by_instruction: dict[str | None, list[int]] = {}
    for i, (_, _, instruction) in enumerate(pairs):
        by_instruction.setdefault(instruction, []).append(i)
    for instruction, rows in by_instruction.items():
        scores = reranker.score_pairs([pairs[r][0] for r in rows], [pairs[r][1] for r in rows], instruction=instruction)
        out[rows] = scores
    return out


def estimate_max(reranker: TransformerReranker, data: TrainingData, percentile: float, seed: int = 0) -> float:
    """The ``percentile`` of the raw scores of (a sample of) the training positives; see the module docstring."""
    scores = score_pairs(reranker, _sample_pairs(data, ESTIMATED_MAX_PAIRS, True, seed))
    return round(float(np.percentile(scores, percentile)), 4)


def export_model(
    reranker: TransformerReranker,
    output: Path,
    *,
    data: TrainingData,
    peft_model: Any | None,
    save_adapter: bool,
    dtype: torch.dtype,
    percentile: float,
    record: dict[str, Any],
    seed: int = 0,
) -> dict[str, Any]:
    """Write the trained model to ``output`` (atomically) and return the export facts
    (``estimated_max``, the merge check) that were also written to ``metrics.json``.

    After this, ``reranker`` holds the exported weights (merged, in the saved dtype)."""
    family = reranker.engine.family
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.tmp-"))
    facts: dict[str, Any] = {}
    try:
        if peft_model is not None:
            if save_adapter:
                peft_model.save_pretrained(str(tmp / ADAPTER_DIR))
            check = _sample_pairs(data, _MERGE_CHECK_PAIRS, False, seed)
            adapter_on = score_pairs(reranker, check)
            # merge_and_unload folds B @ A * alpha / r into each adapted weight and puts the plain
            # layers back into the same parent modules, so the reranker's head runs the merged model.
            base = peft_model.merge_and_unload()
            assert base is reranker.engine.model
            merged = score_pairs(reranker, check)
            facts["merge_max_abs_diff"] = float(np.max(np.abs(merged - adapter_on))) if len(check) else 0.0
        model = reranker.engine.model
        if dtype != next(model.parameters()).dtype:
            model.to(dtype)
        if any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules()):
            model.gradient_checkpointing_disable()
        model.eval().requires_grad_(False)
        marker: dict[str, Any] = {"family": family.name}
        if isinstance(family, MxbaiV2Family):
            estimated = estimate_max(reranker, data, percentile, seed)
            marker["estimated_max"] = estimated
            reranker.estimated_max = estimated
            facts["estimated_max"] = estimated
        setattr(model.config, CONFIG_MARKER, marker)
        model.config.use_cache = True
        model.save_pretrained(str(tmp), safe_serialization=True)
        reranker.tokenizer.save_pretrained(str(tmp))
        record = {**record, "export": {**facts, "dtype": str(dtype).removeprefix("torch."), "marker": marker}}
        (tmp / METRICS_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        replace_dir(tmp, output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("wrote %s (%s)", output, ", ".join(f"{k}={v}" for k, v in facts.items()))
    return record


def resolve_save_dtype(choice: str, checkpoint_dtype: Any) -> torch.dtype:
    """``save_dtype`` -> a dtype; ``"auto"``: the starting checkpoint's (float32 when it declares none)."""
    if choice != "auto":
        return _DTYPES[choice]
    name = str(checkpoint_dtype).removeprefix("torch.") if checkpoint_dtype is not None else "float32"
    return _DTYPES.get(name, torch.float32)
