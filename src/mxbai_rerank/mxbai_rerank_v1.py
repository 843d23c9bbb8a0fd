"""v1 rerankers (DeBERTa-v3 cross-encoders): ``mixedbread-ai/mxbai-rerank-{xsmall,base,large}-v1``.

A thin shell over the scoring engine and the ``mxbai-v1`` family.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ._model import TransformerReranker
from ._registry import get_family
from .families.mxbai_v1 import FAMILY, MxbaiV1Family

__all__ = ["MxbaiRerankV1"]


class MxbaiRerankV1(TransformerReranker):
    """A v1 cross-encoder: score = ``sigmoid(logit)``, already in (0, 1).

    Takes the same arguments as :class:`~mxbai_rerank.MxbaiRerankV2` except
    ``estimated_max`` (accepted and ignored, so ``load()`` callers may pass it);
    ``max_length`` defaults to the tokenizer's limit (512). ``normalize`` is accepted by
    ``rank`` and changes nothing; ``instruction`` is refused.
    """

    family_name: ClassVar[str | None] = FAMILY.name

    def __init__(self, model_name_or_path: str, *, max_length: int | None = None, **kwargs: Any) -> None:
        kwargs.pop("estimated_max", None)
        family = kwargs.get("family")
        if family is not None and not isinstance(get_family(family), MxbaiV1Family):
            raise ValueError(f"MxbaiRerankV1 runs the {FAMILY.name} family (or one derived from it), not {family!r}")
        super().__init__(model_name_or_path, max_length=max_length, **kwargs)

    def prepare_inputs(self, queries: list[str], documents: list[str]) -> Any:
        """Tokenized, right-padded pairs (``input_ids``, ``attention_mask``[, ``token_type_ids``])."""
        import torch
        from transformers import BatchEncoding

        from ._batching import collate

        encoded = self.encode_pairs(queries, documents)
        batch = collate(encoded.input_ids, self.engine.pad_token_id, encoded.token_type_ids)
        data: dict[str, torch.Tensor] = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        if batch.token_type_ids is not None:
            data["token_type_ids"] = batch.token_type_ids
        return BatchEncoding(data)
