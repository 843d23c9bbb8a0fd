"""Distributed batch reranking on Ray Data (the ``[ray]`` extra).

>>> import ray
>>> from mxbai_rerank.ray import rerank_dataset
>>> ds = ray.data.read_parquet("pairs/")  # columns: query, document, any others
>>> scored = rerank_dataset(ds, "mixedbread-ai/mxbai-rerank-base-v2", num_actors=4, num_gpus_per_actor=1)
>>> scored.write_parquet("scored/")

Import note: inside this package ``import ray`` is an absolute import and always means the
Ray library, never this subpackage.
"""

from __future__ import annotations

from ._pipeline import DEFAULT_BATCH_SIZE, read_pairs, rerank_dataset, rerank_parquet, top_k_per_group
from ._preflight import PairsInputError, PairsSource, inspect_pairs
from ._scorer import RerankScorer

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "PairsInputError",
    "PairsSource",
    "RerankScorer",
    "inspect_pairs",
    "read_pairs",
    "rerank_dataset",
    "rerank_parquet",
    "top_k_per_group",
]
