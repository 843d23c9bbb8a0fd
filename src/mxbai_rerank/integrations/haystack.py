"""A Haystack 2.x/3.x ranker component: rerank documents with an mxbai-rerank model.

>>> from mxbai_rerank.integrations.haystack import MxbaiRerankRanker
>>> pipeline.add_component("ranker", MxbaiRerankRanker("mixedbread-ai/mxbai-rerank-base-v2", top_k=3))
>>> pipeline.connect("retriever.documents", "ranker.documents")

What is scored: a document's ``content``; with ``rank_fields``, the JSON object
``{**meta, "content": content}`` through those fields. Returned documents are copies, best
first, with ``score`` set (and, with ``long_documents="chunk"``, ``meta["relevance_span"]``:
the best window's character range in the scored text).

The model loads (or the server is checked) in :meth:`MxbaiRerankRanker.warm_up`, which a
pipeline calls before running, or on first use. The component serialises with its pipeline
when ``model`` is a name or path and ``api_key`` (if any) an environment-variable ``Secret``.

Needs ``pip install 'mxbai-rerank[haystack]'`` (``haystack-ai``).
"""

# No ``from __future__ import annotations`` here: Haystack 2 builds a component's sockets from
# the ``run`` annotations as they are at runtime, and string annotations do not connect.

import dataclasses
import logging
import os
from collections.abc import Sequence
from typing import Any

from .._documents import Document as JsonDocument
from .._documents import check_query
from .._extras import require
from ._client import LocalClient, Ranked, RemoteClient, check_positive, check_rank_fields, make_client, type_name

__all__ = ["MxbaiRerankRanker"]

logger = logging.getLogger(__name__)

_haystack = require("haystack", "haystack")
_auth = require("haystack.utils.auth", "haystack")

component = _haystack.component
Document = _haystack.Document
Secret = _auth.Secret


@component
class MxbaiRerankRanker:
    """Rank ``documents`` for ``query`` and return the ``top_k`` best, with ``score`` set.

    Args:
        model: A model name or local path (loaded by :meth:`warm_up` with
            :func:`mxbai_rerank.load`), or a loaded reranker (anything with the library's
            ``rank()``; such a component does not serialise). With ``base_url``: the served
            model's id, sent with each request (optional).
        base_url: Rank through a server speaking the Mixedbread rerank API instead
            (``mxbai-rerank serve``).
        api_key: The server's API key, e.g. ``Secret.from_env_var("MXBAI_RERANK_API_KEY")``.
        top_k: How many documents to return by default, best first; ``None``: all, reordered.
        instruction: Optional task instruction (v2 models).
        rank_fields: Score these fields of ``{**meta, "content": content}`` instead of the content.
        model_kwargs: Keywords for :func:`mxbai_rerank.load` (``device``, ``torch_dtype``...),
            JSON values to serialise.
        timeout: Seconds to wait for the server.
        **rank_kwargs: More options for the library's ``rank`` (e.g. ``long_documents="chunk"``),
            sent as request fields to a server.
    """

    def __init__(
        self,
        model: Any = None,
        *,
        base_url: str | None = None,
        api_key: Any = None,
        top_k: int | None = 10,
        instruction: str | None = None,
        rank_fields: Sequence[str] | str | None = None,
        model_kwargs: dict[str, Any] | None = None,
        timeout: float = 60.0,
        **rank_kwargs: Any,
    ) -> None:
        if isinstance(api_key, str):
            api_key = Secret.from_token(api_key)
        if api_key is not None and not isinstance(api_key, Secret):
            raise TypeError(f"api_key must be a haystack Secret, a str or None, got {type(api_key).__name__}")
        self.model = str(model) if isinstance(model, os.PathLike) else model
        self.base_url = base_url
        self.api_key = api_key
        self.top_k = check_positive(top_k, "top_k")
        self.instruction = instruction
        self.rank_fields = check_rank_fields(rank_fields)
        self.model_kwargs = dict(model_kwargs or {})
        self.timeout = timeout
        self._client: LocalClient | RemoteClient = make_client(
            self.model,
            base_url=base_url,
            api_key=api_key.resolve_value() if api_key is not None else None,
            timeout=timeout,
            instruction=instruction,
            rank_fields=self.rank_fields,
            model_kwargs=self.model_kwargs,
            rank_kwargs=rank_kwargs,
            extra="haystack",
        )
        self.rank_kwargs = self._client.rank_kwargs

    @property
    def reranker(self) -> Any:
        """The local reranker, loaded on first access (``None`` when ranking through a server)."""
        return self._client.reranker if isinstance(self._client, LocalClient) else None

    def warm_up(self) -> None:
        """Load the local model, or check that the server at ``base_url`` answers."""
        self._client.warm_up()

    def to_dict(self) -> dict[str, Any]:
        if self.model is not None and not isinstance(self.model, str):
            raise TypeError(
                "MxbaiRerankRanker built from a loaded reranker cannot be serialised: build it with "
                "model=<name or path> (and model_kwargs) to put it in a saved pipeline"
            )
        return _haystack.default_to_dict(
            self,
            model=self.model,
            base_url=self.base_url,
            api_key=self.api_key.to_dict() if self.api_key is not None else None,
            top_k=self.top_k,
            instruction=self.instruction,
            rank_fields=self.rank_fields,
            model_kwargs=self.model_kwargs,
            timeout=self.timeout,
            **self.rank_kwargs,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MxbaiRerankRanker":
        _auth.deserialize_secrets_inplace(data.get("init_parameters", {}), keys=["api_key"])
        return _haystack.default_from_dict(cls, data)

    def _prepare(
        self, query: object, documents: object, top_k: object
    ) -> tuple[str, list[Document], list[JsonDocument], int | None]:
        top_n = self.top_k if top_k is None else check_positive(top_k, "top_k", allow_none=False)
        query = check_query(query)
        if isinstance(documents, (str, bytes)) or not isinstance(documents, Sequence):
            raise TypeError(f"documents must be a list of haystack Document objects, got {type(documents).__name__}")
        for i, doc in enumerate(documents):
            if not isinstance(doc, Document):
                raise TypeError(f"documents[{i}] must be a haystack Document, got {type_name(doc)}")
            if doc.content is None:
                raise ValueError(f"documents[{i}] has no text content to rank (id {doc.id!r})")
        docs = list(documents)
        if self.rank_fields is None:
            inputs: list[JsonDocument] = [doc.content for doc in docs]
        else:
            inputs = [{**doc.meta, "content": doc.content} for doc in docs]
        return query, docs, inputs, top_n

    @component.output_types(documents=list[Document])
    def run(self, query: str, documents: list[Document], top_k: int | None = None) -> dict[str, list[Document]]:
        """The ``top_k`` (default: the constructor's) best ``documents`` for ``query``, with ``score`` set."""
        query, docs, inputs, top_n = self._prepare(query, documents, top_k)
        if not docs:
            return {"documents": []}
        self.warm_up()
        return {"documents": [_scored(docs[r.index], r) for r in self._client.rank(query, inputs, top_n)]}

    @component.output_types(documents=list[Document])
    async def run_async(
        self, query: str, documents: list[Document], top_k: int | None = None
    ) -> dict[str, list[Document]]:
        """:meth:`run` without blocking the event loop."""
        query, docs, inputs, top_n = self._prepare(query, documents, top_k)
        if not docs:
            return {"documents": []}
        # A local model loads in the worker thread if needed; a server that does not answer fails the request.
        ranked = await self._client.arank(query, inputs, top_n)
        return {"documents": [_scored(docs[r.index], r) for r in ranked]}


def _scored(doc: Document, ranked: Ranked) -> Document:
    if ranked.span is None:
        return dataclasses.replace(doc, score=ranked.score)
    return dataclasses.replace(doc, score=ranked.score, meta={**doc.meta, "relevance_span": list(ranked.span)})
