"""What a reranker family is: the data and the three builders the scoring engine asks for.

A family answers, for every checkpoint of its kind:

* **detection** - :meth:`RerankerFamily.check_config` refuses a config this family cannot
  score (the registry decides *which* family from a known model name, an explicit marker in
  the config, or the caller's ``family=``; it never guesses from the architecture alone);
* **encoding** - :meth:`build_encoder` turns (query, document) pairs into token ids;
* **the score head** - :meth:`build_head` wraps the loaded model into a ``torch.nn.Module``
  mapping a batch to raw scores;
* **post-processing** - :meth:`postprocess` maps raw scores to the public ones;
* **defaults** - the transformers auto class, the default ``max_length`` and ``estimated_max``.

A family holds no state: one instance serves every model of the family.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from .._encoding import PairEncoder, TokenizerPool
    from .._heads import ScoreHead

__all__ = ["RerankerFamily", "sigmoid"]


def sigmoid(x: Any) -> np.ndarray:
    """The logistic function of an array, computed in float64 without overflow, as float32."""
    x = np.asarray(x, dtype=np.float64)
    out = np.exp(-np.logaddexp(0.0, -x))  # 1 / (1 + e^-x), stable for any sign
    return out.astype(np.float32)


@dataclass(frozen=True)
class RerankerFamily:
    """Base class of a reranker family; subclasses fill in the fields and the builders."""

    name: str  # registry key, e.g. "mxbai-v2"
    description: str
    auto_model_class: str  # the transformers auto class that loads the checkpoint
    architecture_suffixes: tuple[str, ...]  # config.architectures this family can score
    # ``max_length`` when the caller gives none; ``None``: the tokenizer's or config's limit.
    default_max_length: int | None = None
    # Centre of the raw-score range for ``normalize=True`` when the model is not a known one.
    default_estimated_max: float | None = None
    # Whether transformers has SDPA / Flash Attention kernels for the architecture.
    attention_kernels: bool = True
    # ``"module:Class"`` of the reranker class ``mxbai_rerank.load`` returns for this family.
    reranker_class: str = "mxbai_rerank._model:TransformerReranker"
    # A classifier whose single logit is the score: ``check_config`` requires ``num_labels == 1``.
    single_logit: bool = False

    def check_config(self, config: Any) -> None:
        """Raise ``ModelLoadError`` when ``config`` is not a model this family can score."""
        from .._engine import ModelLoadError

        architectures = list(getattr(config, "architectures", None) or [])
        if not any(a.endswith(self.architecture_suffixes) for a in architectures):
            raise ModelLoadError(
                f"the {self.name} family scores {' or '.join('*' + s for s in self.architecture_suffixes)} "
                f"models, but this config has architectures={architectures}"
            )
        num_labels = getattr(config, "num_labels", None)
        if self.single_logit and num_labels != 1:
            raise ModelLoadError(
                f"the {self.name} family scores classifiers with one relevance logit, "
                f"but this one has num_labels={num_labels}: its logits are not a relevance score"
            )

    def build_encoder(
        self, tokenizers: TokenizerPool, config: Any, max_length: int | None, overrides: dict[str, Any]
    ) -> PairEncoder:
        """The pair encoder; ``overrides`` are template fields a subclass of the reranker changed."""
        raise NotImplementedError

    def build_head(self, model: torch.nn.Module, encoder: PairEncoder) -> ScoreHead:
        raise NotImplementedError

    def postprocess(self, raw: np.ndarray, *, normalize: bool, estimated_max: float | None) -> np.ndarray:
        """Raw head outputs -> the scores ``rank`` reports (float32)."""
        raise NotImplementedError
