"""v2 rerankers (Qwen2 causal LMs): ``mixedbread-ai/mxbai-rerank-{base,large}-v2``."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ._encoding import V2Encoder
from ._heads import CausalLMBinaryHead
from ._model import TransformerReranker
from ._registry import DEFAULT_MODEL, DEFAULT_V2_MAX_LENGTH, FALLBACK_ESTIMATED_MAX, V2_PROMPT
from .utils import sigmoid_normalize

__all__ = ["MxbaiRerankV2"]


class MxbaiRerankV2(TransformerReranker):
    """A v2 reranker.

    Example::

        reranker = MxbaiRerankV2("mixedbread-ai/mxbai-rerank-base-v2")
        reranker.rank("Who wrote 'To Kill a Mockingbird'?", documents, top_k=3)

    Args:
        model_name_or_path: Hub name or local directory.
        device: ``"cuda"``, ``"cpu"``, ``"mps"``...; default: the best available.
        torch_dtype: Overrides the automatic choice (see the README, "dtype").
        max_length: Most tokens of query plus document (default 8192; up to the model's 32k).
        tokenizer_kwargs: Passed to ``AutoTokenizer.from_pretrained``.
        disable_transformers_warnings: Set transformers' verbosity to errors only.
        estimated_max: For ``normalize=True``; default: the model's own value (9.0 base, 12.0 large).
        max_batch_tokens: Padded tokens per forward pass (default 8192 on CPU, 65536 on CUDA).
        **kwargs: Passed to ``AutoModelForCausalLM.from_pretrained``.
    """

    family = "v2"
    _auto_model_class = "AutoModelForCausalLM"

    def __init__(
        self,
        model_name_or_path: str = DEFAULT_MODEL,
        *,
        device: str | torch.device | None = None,
        torch_dtype: str | torch.dtype | None = None,
        max_length: int = DEFAULT_V2_MAX_LENGTH,
        tokenizer_kwargs: dict[str, Any] | None = None,
        disable_transformers_warnings: bool = False,
        estimated_max: float | None = None,
        max_batch_tokens: int | None = None,
        **kwargs: Any,
    ) -> None:
        self._estimated_max_arg = estimated_max
        super().__init__(
            model_name_or_path,
            device=device,
            torch_dtype=torch_dtype,
            max_length=max_length,
            tokenizer_kwargs=tokenizer_kwargs,
            disable_transformers_warnings=disable_transformers_warnings,
            max_batch_tokens=max_batch_tokens,
            **kwargs,
        )

    def _setup(self, max_length: int | None) -> None:
        self.model_max_length = int(getattr(self.config, "max_position_embeddings", 32768))
        self._encoder = V2Encoder(
            self._tokenizer, V2_PROMPT, max_length or DEFAULT_V2_MAX_LENGTH, self.model_max_length
        )
        self.max_length = self._encoder.max_length
        self.yes_loc, self.no_loc = self._encoder.positive_id, self._encoder.negative_id
        self._head = CausalLMBinaryHead(self.model, self.yes_loc, self.no_loc)
        if self._estimated_max_arg is not None:
            self.estimated_max = float(self._estimated_max_arg)
        elif self.spec is not None and self.spec.estimated_max is not None:
            self.estimated_max = self.spec.estimated_max
        else:
            self.estimated_max = FALLBACK_ESTIMATED_MAX

    def _transform(self, raw: np.ndarray, *, normalize: bool) -> np.ndarray:
        return sigmoid_normalize(raw, self.estimated_max).astype(np.float32) if normalize else raw

    def normalize_scores(self, scores: Any) -> Any:
        """Raw scores -> (0, 1) with this model's ``estimated_max``."""
        return sigmoid_normalize(scores, estimated_max=self.estimated_max)
