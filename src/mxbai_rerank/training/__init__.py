"""Fine-tuning rerankers on your own data: the model card's three stages (GRPO, contrastive,
preference) and a pointwise baseline, over the package's own prompt encoder and score heads.

>>> from mxbai_rerank.training import TrainingConfig, train
>>> result = train(
...     "mixedbread-ai/mxbai-rerank-base-v2",
...     data="train.jsonl",
...     output_dir="my-reranker",
...     eval_data="beir-folder-or-jsonl",
...     config=TrainingConfig(stages=("grpo", "contrastive", "preference"), lora=True),
... )
>>> result.metrics["eval"]["metrics"]  # nDCG@10 / MRR@10 before and after each stage

The output folder loads everywhere a model loads (``mxbai_rerank.load``, ``MxbaiRerankV2``, the
server, Ray). LoRA needs ``pip install 'mxbai-rerank[train]'``; evaluation and BM25 hard-negative
mining need ``[eval]``.
"""

from __future__ import annotations

from ._config import MINE_MODES, STAGES, V1_STAGES, TrainingConfig, TrainingConfigError
from ._data import (
    DatasetError,
    EvalSet,
    QueryGroup,
    TrainingData,
    load_eval_set,
    load_training_data,
    mine_hard_negatives,
)
from ._run import TrainingResult, format_metrics_table, train
from ._trainer import StepInfo

__all__ = [
    "MINE_MODES",
    "STAGES",
    "V1_STAGES",
    "DatasetError",
    "EvalSet",
    "QueryGroup",
    "StepInfo",
    "TrainingConfig",
    "TrainingConfigError",
    "TrainingData",
    "TrainingResult",
    "format_metrics_table",
    "load_eval_set",
    "load_training_data",
    "mine_hard_negatives",
    "train",
]
