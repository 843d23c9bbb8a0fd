"""``RerankScorer``: a stateful callable that scores blocks of (query, document) rows.

One instance holds one loaded :class:`~mxbai_rerank.Scorer`, so Ray Data's actor pool
(``map_batches`` with a callable class) loads the model once per actor and reuses it for
every block it is sent. Only the ``Scorer`` protocol is used: ``encode_pairs``,
``score_encoded``, ``postprocess`` and ``info``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from .. import EncodedPairs, Scorer, load
from .._chunking import Chunking, per_document, split_options

logger = logging.getLogger(__name__)

__all__ = ["RerankScorer"]

_Batch = TypeVar("_Batch")


class RerankScorer:
    """Scores batches of rows with columns ``query``, ``document`` and optionally ``instruction``.

    Use it directly or as the callable class of ``ray.data.Dataset.map_batches``::

        ds.map_batches(
            RerankScorer,
            fn_constructor_kwargs={"model": "mixedbread-ai/mxbai-rerank-base-v2", "device": "cuda"},
            batch_size=1024,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=4),
            num_gpus=1,
        )

    A call returns the batch with a float32 ``score_column`` appended and every other column
    unchanged, rows in input order. Accepted batch formats: ``pyarrow.Table``, ``dict`` of
    NumPy arrays (Ray's default) and ``pandas.DataFrame``; the result has the same format.

    Inside a batch, rows are grouped by instruction (a null or empty instruction means none),
    each group is tokenized in one call with every distinct query tokenized once, and all
    groups are scored together in token-budget forward passes sorted by length.

    Instances pickle as their constructor arguments: unpickling loads the model again.

    Args:
        model: Hub name or local directory of a v1 or v2 reranker (see :func:`mxbai_rerank.load`).
        device: ``"cuda"``, ``"cpu"``...; default: the best available in this process.
        torch_dtype: ``"float32"``, ``"bfloat16"``, ``"float16"`` or ``"auto"`` (default).
        max_batch_tokens: Padded tokens per forward pass (default: the model's device default).
        batch_size: Most pairs per forward pass (default: limited by tokens only).
        normalize: Scores in (0, 1) instead of raw logits.
        rank_fields: For object documents (Parquet structs), which fields to score.
        num_threads: ``torch.set_num_threads`` for this process (CPU scoring), if given.
        query_column, document_column, instruction_column: Input column names.
        score_column: Name of the appended column; must not be an input column.
        model_kwargs: More keyword arguments for :func:`mxbai_rerank.load`.
        chunking: Long-document options, as for ``rank``: ``long_documents="chunk"`` and
            optionally ``chunk_size``, ``chunk_stride``, ``chunk_aggregate``; a document's score
            is then the aggregate of its windows' scores.
        progress: A Ray actor handle with a method ``add(rows)``; each call reports its number
            of rows to it (fire and forget). :func:`~mxbai_rerank.ray.rerank_parquet` uses it
            for its progress bar.
    """

    def __init__(
        self,
        model: str,
        *,
        device: str | None = None,
        torch_dtype: str | None = None,
        max_batch_tokens: int | None = None,
        batch_size: int | None = None,
        normalize: bool = False,
        rank_fields: Sequence[str] | None = None,
        num_threads: int | None = None,
        query_column: str = "query",
        document_column: str = "document",
        instruction_column: str = "instruction",
        score_column: str = "score",
        model_kwargs: Mapping[str, Any] | None = None,
        chunking: Mapping[str, Any] | None = None,
        progress: Any | None = None,
    ) -> None:
        self._init_kwargs: dict[str, Any] = {
            "model": model,
            "device": device,
            "torch_dtype": torch_dtype,
            "max_batch_tokens": max_batch_tokens,
            "batch_size": batch_size,
            "normalize": normalize,
            "rank_fields": None if rank_fields is None else list(rank_fields),
            "num_threads": num_threads,
            "query_column": query_column,
            "document_column": document_column,
            "instruction_column": instruction_column,
            "score_column": score_column,
            "model_kwargs": dict(model_kwargs or {}),
            "chunking": dict(chunking or {}),
            "progress": progress,
        }
        if num_threads is not None:
            import torch

            torch.set_num_threads(max(1, int(num_threads)))
        self.batch_size = batch_size
        self.normalize = normalize
        self.rank_fields = self._init_kwargs["rank_fields"]
        self.query_column = query_column
        self.document_column = document_column
        self.instruction_column = instruction_column
        self.score_column = score_column
        self.progress = progress
        Chunking.from_options(**dict(chunking or {}))  # a bad option fails here, not per batch
        self.encode_options, self.aggregate = split_options(chunking)
        self.reranker: Scorer = load(
            model, device=device, torch_dtype=torch_dtype, max_batch_tokens=max_batch_tokens, **(model_kwargs or {})
        )
        info = self.reranker.info()
        logger.info(
            "RerankScorer ready: %s (%s) on %s, %s, max_length=%d, max_batch_tokens=%d, backend=%s",
            info.model_id,
            info.family,
            info.device,
            info.dtype,
            info.max_length,
            info.max_batch_tokens,
            info.backend,
        )

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return _rebuild, (type(self), self._init_kwargs)

    def __call__(self, batch: _Batch) -> _Batch:
        queries = _column(batch, self.query_column)
        documents = _column(batch, self.document_column)
        instructions = _column(batch, self.instruction_column) if _has_column(batch, self.instruction_column) else None
        if _has_column(batch, self.score_column):
            raise ValueError(f"the input already has a column named {self.score_column!r}; choose another score column")
        scores = self.score(queries, documents, instructions)
        if self.progress is not None:
            self.progress.add.remote(len(scores))
        return _with_column(batch, self.score_column, scores)

    def score(
        self,
        queries: Sequence[Any],
        documents: Sequence[Any],
        instructions: Sequence[Any] | None = None,
    ) -> np.ndarray:
        """Float32 scores for ``(queries[i], documents[i])`` (under ``instructions[i]``), input order."""
        n = len(queries)
        if len(documents) != n or (instructions is not None and len(instructions) != n):
            raise ValueError("query, document and instruction columns must have the same length")
        _check_not_null(queries, self.query_column)
        _check_not_null(documents, self.document_column)
        groups: dict[str | None, list[int]] = {}
        for i in range(n):
            instruction = instructions[i] if instructions is not None else None
            # Null, NaN (pandas) and "" all mean "no instruction".
            groups.setdefault(instruction if isinstance(instruction, str) and instruction else None, []).append(i)
        order: list[int] = []
        parts: list[EncodedPairs] = []
        for instruction, rows in groups.items():
            parts.append(
                self.reranker.encode_pairs(
                    [queries[i] for i in rows],
                    [documents[i] for i in rows],
                    instruction=instruction,
                    rank_fields=self.rank_fields,
                    **self.encode_options,
                )
            )
            order.extend(rows)
        # One plan over every group: the forward passes are packed by token length across groups.
        merged = EncodedPairs.concat(parts)
        raw = per_document(self.reranker.score_encoded(merged, batch_size=self.batch_size), merged, self.aggregate)
        scores = np.empty(n, dtype=np.float32)
        scores[order] = self.reranker.postprocess(raw, normalize=self.normalize)
        return scores


def _rebuild(cls: type[RerankScorer], kwargs: dict[str, Any]) -> RerankScorer:
    return cls(**kwargs)


def _check_not_null(values: Sequence[Any], name: str) -> None:
    for i, value in enumerate(values):
        if value is None or (isinstance(value, float) and np.isnan(value)):
            raise ValueError(f"column {name!r} is null in row {i} of a batch; every pair needs a {name}")


def _has_column(batch: Any, name: str) -> bool:
    if hasattr(batch, "column_names"):  # pyarrow.Table
        return name in batch.column_names
    return name in batch  # dict of arrays or pandas.DataFrame: ``in`` looks at the keys/columns


def _column(batch: Any, name: str) -> list[Any]:
    if not _has_column(batch, name):
        raise ValueError(f"the input has no {name!r} column")
    if hasattr(batch, "column_names"):
        return batch.column(name).to_pylist()
    column = batch[name]
    return column.tolist() if hasattr(column, "tolist") else list(column)


def _with_column(batch: _Batch, name: str, values: np.ndarray) -> _Batch:
    if hasattr(batch, "column_names"):
        import pyarrow as pa

        return batch.append_column(name, pa.array(values, type=pa.float32()))  # type: ignore[attr-defined,return-value]
    if isinstance(batch, dict):
        return {**batch, name: values}  # type: ignore[return-value]
    out = batch.copy(deep=False)  # type: ignore[attr-defined]
    out[name] = values
    return out
