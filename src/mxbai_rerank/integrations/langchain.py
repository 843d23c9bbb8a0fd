"""A LangChain document compressor: rerank retrieved documents with an mxbai-rerank model.

>>> from mxbai_rerank.integrations.langchain import MxbaiRerankCompressor
>>> compressor = MxbaiRerankCompressor("mixedbread-ai/mxbai-rerank-base-v2", top_n=3)
>>> retriever = ContextualCompressionRetriever(base_compressor=compressor, base_retriever=...)

What is scored: a document's ``page_content``; with ``rank_fields``, the JSON object
``{**metadata, "page_content": page_content}`` through those fields (dotted paths, see the
library's rules for JSON documents). Each returned document is a copy whose metadata has
``relevance_score`` (and, with ``long_documents="chunk"``, ``relevance_span``: the best
window's character range in the scored text).

Needs ``pip install 'mxbai-rerank[langchain]'`` (``langchain-core``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .._documents import Document as JsonDocument
from .._documents import check_query
from .._extras import require
from ._client import LocalClient, Ranked, RemoteClient, check_positive, configure, type_name

if TYPE_CHECKING:
    from langchain_core.callbacks import Callbacks
    from langchain_core.documents import Document

__all__ = ["MxbaiRerankCompressor"]

logger = logging.getLogger(__name__)

_documents = require("langchain_core.documents", "langchain")
_pydantic = require("pydantic", "langchain")


class MxbaiRerankCompressor(_documents.BaseDocumentCompressor):
    """Rerank documents for a query and keep the ``top_n`` best (for ``ContextualCompressionRetriever``).

    Args:
        model: A model name or local path (loaded now with :func:`mxbai_rerank.load`), or a
            loaded reranker (anything with the library's ``rank()``). With ``base_url``: the
            served model's id, sent with each request (optional).
        base_url: Rank through a server speaking the Mixedbread rerank API instead
            (``mxbai-rerank serve``); checked for an answer now.
        api_key: The server's API key (sent as ``Authorization: Bearer``).
        top_n: How many documents to keep, best first; ``None``: all of them, reordered.
        instruction: Optional task instruction (v2 models).
        rank_fields: Score these fields of ``{**metadata, "page_content": ...}`` instead of
            ``page_content`` alone.
        model_kwargs: Keywords for :func:`mxbai_rerank.load` (``device``, ``torch_dtype``...).
        timeout: Seconds to wait for the server.
        **rank_kwargs: More options for the library's ``rank`` (e.g. ``long_documents="chunk"``),
            sent as request fields to a server.
    """

    model_config = _pydantic.ConfigDict(arbitrary_types_allowed=True, protected_namespaces=())

    model: Any = None
    base_url: str | None = None
    api_key: _pydantic.SecretStr | None = None
    top_n: int | None = 3
    instruction: str | None = None
    rank_fields: list[str] | None = None
    model_kwargs: dict[str, Any] = _pydantic.Field(default_factory=dict)
    rank_kwargs: dict[str, Any] = _pydantic.Field(default_factory=dict)
    timeout: float = 60.0

    _client: LocalClient | RemoteClient = _pydantic.PrivateAttr()

    def __init__(
        self,
        model: Any = None,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        top_n: int | None = 3,
        instruction: str | None = None,
        rank_fields: Sequence[str] | str | None = None,
        model_kwargs: dict[str, Any] | None = None,
        timeout: float = 60.0,
        **rank_kwargs: Any,
    ) -> None:
        client, fields = configure(
            model,
            base_url=base_url,
            api_key=api_key,
            top_n=top_n,
            instruction=instruction,
            rank_fields=rank_fields,
            model_kwargs=model_kwargs,
            timeout=timeout,
            rank_kwargs=rank_kwargs,
            extra="langchain",
        )
        super().__init__(**fields)
        self._client = client

    @property
    def reranker(self) -> Any:
        """The local reranker (``None`` when ranking through a server)."""
        return self._client.reranker if isinstance(self._client, LocalClient) else None

    def _prepare(self, documents: Sequence[Any], query: object) -> tuple[list[Document], list[JsonDocument], str]:
        check_positive(self.top_n, "top_n")
        docs = _check_documents(documents)
        if self.rank_fields is None:
            inputs: list[JsonDocument] = [doc.page_content for doc in docs]
        else:
            inputs = [{**doc.metadata, "page_content": doc.page_content} for doc in docs]
        return docs, inputs, check_query(query)

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """The ``top_n`` best documents for ``query``, best first, with ``relevance_score`` in metadata."""
        docs, inputs, query = self._prepare(documents, query)
        return [_scored(docs[r.index], r) for r in self._client.rank(query, inputs, self.top_n)]

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """:meth:`compress_documents` without blocking the event loop."""
        docs, inputs, query = self._prepare(documents, query)
        return [_scored(docs[r.index], r) for r in await self._client.arank(query, inputs, self.top_n)]


def _check_documents(documents: object) -> list[Document]:
    if isinstance(documents, (str, bytes)) or not isinstance(documents, Sequence):
        raise TypeError(f"documents must be a list of langchain_core Document objects, got {type(documents).__name__}")
    for i, doc in enumerate(documents):
        if not isinstance(doc, _documents.Document):
            raise TypeError(f"documents[{i}] must be a langchain_core Document, got {type_name(doc)}")
    return list(documents)


def _scored(doc: Document, ranked: Ranked) -> Document:
    metadata = {**doc.metadata, "relevance_score": ranked.score}
    if ranked.span is not None:
        metadata["relevance_span"] = list(ranked.span)
    return doc.model_copy(update={"metadata": metadata})
