"""The ``mxbai-v2`` family: Qwen2 causal LMs that answer "1" (relevant) or "0" under a prompt.

``mixedbread-ai/mxbai-rerank-base-v2`` (0.5B) and ``-large-v2`` (1.5B). A pair becomes one
chat prompt (:data:`TEMPLATE`); the raw score is ``logit("1") - logit("0")`` at the last
position; ``normalize=True`` maps it to ``sigmoid(x - estimated_max / 2)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .._encoding import PairEncoder, PromptPairEncoder, PromptTemplate, TokenizerPool
from ._base import RerankerFamily, sigmoid

if TYPE_CHECKING:
    from torch import nn

    from .._heads import ScoreHead

__all__ = ["FAMILY", "TEMPLATE", "MxbaiV2Family"]

TEMPLATE = PromptTemplate(
    prefix=(
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n"
    ),
    suffix="<|im_end|>\n<|im_start|>assistant\n",
    sep="\n",
    instruction="instruction: {instruction}",
    query="query: {query}",
    document="document: {document}",
    task=(
        "You are a search relevance expert who evaluates how well documents match search queries. "
        "For each query-document pair, carefully analyze the semantic relationship between them, "
        "then provide your binary relevance judgment (0 for not relevant, 1 for relevant).\nRelevance:"
    ),
    positive_token="1",
    negative_token="0",
)


@dataclass(frozen=True)
class MxbaiV2Family(RerankerFamily):
    template: PromptTemplate = TEMPLATE

    def build_encoder(
        self, tokenizers: TokenizerPool, config: Any, max_length: int | None, overrides: dict[str, Any]
    ) -> PairEncoder:
        template = dataclasses.replace(self.template, **overrides)
        window = int(getattr(config, "max_position_embeddings", 32768))
        # Upstream: ``max_length or max_position_embeddings`` (None or 0: the whole window).
        return PromptPairEncoder(tokenizers, template, max_length or window, window)

    def build_head(self, model: nn.Module, encoder: PairEncoder) -> ScoreHead:
        from .._heads import AnswerTokenHead

        assert isinstance(encoder, PromptPairEncoder)
        return AnswerTokenHead(model, encoder.positive_id, encoder.negative_id)

    def postprocess(self, raw: np.ndarray, *, normalize: bool, estimated_max: float | None) -> np.ndarray:
        raw = np.asarray(raw, dtype=np.float32)
        if not normalize:
            return raw
        centre = (self.default_estimated_max if estimated_max is None else estimated_max) or 0.0
        return sigmoid(raw.astype(np.float64) - centre / 2)


FAMILY = MxbaiV2Family(
    name="mxbai-v2",
    description="Mixedbread v2: Qwen2 causal LMs scoring logit('1') - logit('0')",
    auto_model_class="AutoModelForCausalLM",
    architecture_suffixes=("ForCausalLM",),
    default_max_length=8192,
    # Upstream's value for a v2 model it does not know (including every local path).
    default_estimated_max=12.0,
    reranker_class="mxbai_rerank.mxbai_rerank_v2:MxbaiRerankV2",
)
