"""The typed seam between the scoring engine and its consumers (server, Ray, evaluation, CLI).

Consumers depend on :class:`Scorer`, never on a reranker class or its private methods.
:class:`~mxbai_rerank.MxbaiRerankV1` and :class:`~mxbai_rerank.MxbaiRerankV2` implement it;
so can anything else that encodes pairs and scores them (a remote model, a test double).

The flow a consumer runs::

    encoded = scorer.encode_pairs(queries, documents, instruction=..., rank_fields=...)
    raw = scorer.score_encoded(encoded)            # (N,) float32, input order, family's raw scores
    scores = scorer.postprocess(raw, normalize=...)  # what ``rank`` reports

``encode_pairs`` may run on any thread (tokenization is thread-safe and runs in parallel);
``score_encoded`` calls are serialised per scorer, so concurrent callers share one token budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from ._documents import Document
    from ._encoding import EncodedPairs

__all__ = ["Scorer", "ScorerInfo"]


@dataclass(frozen=True)
class ScorerInfo:
    """What a loaded scorer is: for logs, ``/v1/models``, metrics and evaluation reports."""

    model_id: str  # hub name or local path it was loaded from
    family: str  # registered family name, e.g. "mxbai-v2"
    device: str  # e.g. "cpu", "cuda:0"
    dtype: str  # e.g. "bfloat16"
    max_length: int  # most tokens of query + document (the prompt template comes on top)
    max_batch_tokens: int  # default padded-token budget of one forward pass
    backend: str  # the engine backend that runs the model, e.g. "torch"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class Scorer(Protocol):
    """Encode (query, document) pairs, score them in token-budget batches, post-process."""

    def encode_pairs(
        self,
        queries: Sequence[str],
        documents: Sequence[Document],
        *,
        instruction: str | None = None,
        rank_fields: Sequence[str] | None = None,
        long_documents: str = "truncate",
        chunk_size: int | None = None,
        chunk_stride: int | None = None,
    ) -> EncodedPairs:
        """Token ids of ``(queries[i], documents[i])``, truncated as the model expects.

        With ``long_documents="chunk"`` the rows are windows (``EncodedPairs.windows``): reduce
        their raw scores to one per document with :func:`mxbai_rerank.aggregate_windows`.
        """
        ...

    def score_encoded(
        self,
        encoded: EncodedPairs,
        *,
        batch_size: int | None = None,
        max_batch_tokens: int | None = None,
        show_progress: bool = False,
    ) -> np.ndarray:
        """Raw scores, float32 of shape (N,), in input order; raises ``NonFiniteScoreError``."""
        ...

    def postprocess(self, raw: np.ndarray, *, normalize: bool = False) -> np.ndarray:
        """The family's public scores from raw ones (v2: raw or ``sigmoid(x - max/2)``; v1: sigmoid)."""
        ...

    def info(self) -> ScorerInfo:
        """Family, model id, device, dtype, max length, budget and backend."""
        ...

    def tokenizer_copy(self) -> Any:
        """A private copy of the tokenizer that the caller may use from its own thread."""
        ...
