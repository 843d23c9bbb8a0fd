"""Reranker families: what a family of reranker checkpoints needs (``_base.RerankerFamily``) and
the built-in ones, ``mxbai-v1`` (:mod:`.mxbai_v1`) and ``mxbai-v2`` (:mod:`.mxbai_v2`).

The registry that maps names to families is :mod:`mxbai_rerank._registry`; its functions are
re-exported here for people writing a family of their own.
"""

from __future__ import annotations

from typing import Any

from ._base import RerankerFamily

__all__ = ["RerankerFamily", "available_families", "get_family", "register_family"]


def __getattr__(name: str) -> Any:
    # The registry imports the family modules, so it is imported lazily here (no cycle).
    if name in ("available_families", "get_family", "register_family"):
        from .. import _registry

        return getattr(_registry, name)
    raise AttributeError(name)
