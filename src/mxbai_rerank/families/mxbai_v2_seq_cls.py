"""The ``mxbai-v2-seq-cls`` family: a v2 reranker converted to a one-label sequence classifier.

``mxbai-rerank convert --to seq-cls`` turns a v2 causal LM into a
``Qwen2ForSequenceClassification`` whose single score row is ``W["1"] - W["0"]``, so its logit
is the v2 raw score. This family scores such a checkpoint exactly as the v2 family scores the
original: the same prompt (:data:`~mxbai_rerank.families.mxbai_v2.TEMPLATE`), truncation,
post-processing and ``estimated_max`` (carried in the config marker), with a head that reads
the classifier's score row instead of two LM-head rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._encoding import PairEncoder
from .mxbai_v2 import MxbaiV2Family

if TYPE_CHECKING:
    from torch import nn

    from .._heads import ScoreHead

__all__ = ["FAMILY", "MxbaiV2SeqClsFamily"]


@dataclass(frozen=True)
class MxbaiV2SeqClsFamily(MxbaiV2Family):
    def build_head(self, model: nn.Module, encoder: PairEncoder) -> ScoreHead:
        from ..convert._heads import SequenceScoreHead

        return SequenceScoreHead(model)


FAMILY = MxbaiV2SeqClsFamily(
    name="mxbai-v2-seq-cls",
    description="Mixedbread v2 converted to a one-label sequence classifier (score row W['1'] - W['0'])",
    auto_model_class="AutoModelForSequenceClassification",
    architecture_suffixes=("ForSequenceClassification",),
    default_max_length=8192,
    default_estimated_max=12.0,
    reranker_class="mxbai_rerank.mxbai_rerank_v2:MxbaiRerankV2",
    single_logit=True,
)
