"""The reranker contract shared by every model: ``rank``, ``_rank``, ``_compute_scores``, ``predict``.

Kept signature-compatible with upstream 0.1.6 so that subclasses written against it (which
implement only ``predict``) keep working.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ._documents import Document, check_documents, check_query, documents_to_texts, normalize_rank_fields
from .utils import top_k_numpy

__all__ = ["BaseReranker", "RankResult"]


@dataclass
class RankResult:
    """One ranked document: its position in the input, its score, and (optionally) itself.

    ``span``: with ``long_documents="chunk"``, the (start, end) character range of the window
    that scored best, in the document's scored text (for a JSON object: the text its
    ``rank_fields`` make); ``None`` otherwise.
    """

    index: int
    score: float
    document: Document | None
    span: tuple[int, int] | None = None


# Pairs per predict() call in the generic path when the caller gives no batch_size.
UPSTREAM_BATCH_SIZE = 32


class BaseReranker:
    """Base class for rerankers: subclasses implement :meth:`predict` (or override scoring)."""

    @abc.abstractmethod
    def predict(self, queries: list[str], documents: list[str], **kwargs: Any) -> Any:
        """Scores for ``(queries[i], documents[i])`` pairs, as a 1-D array or tensor."""

    def rank(
        self,
        query: str,
        documents: Sequence[Document],
        *,
        top_k: int = 100,
        batch_size: int | None = None,
        sort: bool = True,
        return_documents: bool = True,
        show_progress: bool = False,
        **kwargs: Any,
    ) -> list[RankResult]:
        """Rank ``documents`` (strings or JSON objects) for one ``query``, best first.

        Args:
            query: The search query.
            documents: Candidate documents: strings, or dicts scored through ``rank_fields``.
            top_k: How many results to return (at most ``len(documents)``).
            batch_size: Most pairs in one forward pass; ``None`` (default): as many as the
                token budget (``max_batch_tokens``) allows. Upstream's default is 32, which on a
                GPU would split a top-100 call into four forward passes.
            sort: Best first (ties by input order); otherwise input order.
            return_documents: Put each input document in its :class:`RankResult`.
            show_progress: A progress bar over batches.
            **kwargs: Model options, e.g. ``instruction``, ``normalize``, ``rank_fields``, and for
                documents longer than the window ``long_documents="chunk"`` with ``chunk_size``,
                ``chunk_stride`` (tokens) and ``chunk_aggregate`` (``"max"``, ``"first"``, ``"mean"``).
        """
        check_query(query)
        documents = check_documents(documents)
        return self._rank(
            queries=[query] * len(documents),
            documents=documents,
            top_k=top_k,
            batch_size=batch_size,
            sort=sort,
            return_documents=return_documents,
            show_progress=show_progress,
            **kwargs,
        )

    def _rank(
        self,
        queries: list[str],
        documents: list[Any],
        *,
        top_k: int = 100,
        batch_size: int | None = None,
        sort: bool = True,
        return_documents: bool = True,
        show_progress: bool = False,
        **kwargs: Any,
    ) -> list[RankResult]:
        if len(queries) != len(documents):
            raise ValueError("The number of queries and documents must be the same.")
        # Validate top_k before any model work, also for empty inputs.
        top_k_numpy(np.zeros(1), top_k)
        if not documents:
            return []
        # ``rank`` validated the documents; here they only become the texts the model scores.
        texts = documents_to_texts(documents, normalize_rank_fields(kwargs.pop("rank_fields", None)))
        raw_scores, spans = self._scores_and_spans(
            queries=queries, documents=texts, batch_size=batch_size, show_progress=show_progress, **kwargs
        )
        scores = np.asarray(raw_scores, dtype=np.float64)
        top_scores, top_indices = top_k_numpy(scores, top_k, sort=sort)
        return [
            RankResult(
                index=int(i),
                score=float(s),
                document=documents[i] if return_documents else None,
                span=None if spans is None else spans[i],
            )
            for i, s in zip(top_indices, top_scores)
        ]

    def _scores_and_spans(
        self,
        *,
        queries: list[str],
        documents: list[str],
        batch_size: int | None,
        show_progress: bool,
        **kwargs: Any,
    ) -> tuple[Any, list[tuple[int, int]] | None]:
        """Scores of text pairs and, where documents were split into windows, each one's best span."""
        scores = self._compute_scores(
            queries=queries, documents=documents, batch_size=batch_size, show_progress=show_progress, **kwargs
        )
        return scores, None

    def _compute_scores(
        self,
        *,
        queries: list[str],
        documents: list[str],
        batch_size: int | None,
        show_progress: bool,
        **kwargs: Any,
    ) -> np.ndarray:
        """Generic path for subclasses that only implement :meth:`predict`: length-bucketed batches
        of ``batch_size`` pairs (``None``: upstream's 32)."""
        if batch_size is None:
            batch_size = UPSTREAM_BATCH_SIZE
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        order = np.argsort([-len(d) for d in documents], kind="stable")
        scores = np.zeros(len(documents), dtype=np.float32)
        starts = range(0, len(order), batch_size)
        for start in tqdm(starts, desc="Ranking", disable=not show_progress):
            idx = order[start : start + batch_size]
            out = self.predict([queries[i] for i in idx], [documents[i] for i in idx], **kwargs)
            scores[idx] = np.asarray(out.cpu() if hasattr(out, "cpu") else out, dtype=np.float32).reshape(-1)
        return scores
