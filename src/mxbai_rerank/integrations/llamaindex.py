"""A LlamaIndex node postprocessor: rerank retrieved nodes with an mxbai-rerank model.

>>> from mxbai_rerank.integrations.llamaindex import MxbaiRerankPostprocessor
>>> reranker = MxbaiRerankPostprocessor("mixedbread-ai/mxbai-rerank-base-v2", top_n=3)
>>> query_engine = index.as_query_engine(similarity_top_k=20, node_postprocessors=[reranker])

What is scored: a node's content without metadata (``get_content(MetadataMode.NONE)``); with
``rank_fields``, the JSON object ``{**metadata, "text": content}`` through those fields. The
result is new ``NodeWithScore`` objects, best first, whose ``score`` is the reranker's; the
nodes themselves are not changed.

Needs ``pip install 'mxbai-rerank[llamaindex]'`` (``llama-index-core``).
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
    from llama_index.core.schema import NodeWithScore, QueryBundle

__all__ = ["MxbaiRerankPostprocessor"]

logger = logging.getLogger(__name__)

_types = require("llama_index.core.postprocessor.types", "llamaindex")
_schema = require("llama_index.core.schema", "llamaindex")
_callbacks = require("llama_index.core.callbacks", "llamaindex")
_pydantic = require("llama_index.core.bridge.pydantic", "llamaindex")


class MxbaiRerankPostprocessor(_types.BaseNodePostprocessor):
    """Rerank nodes for the query and keep the ``top_n`` best (``node_postprocessors=[...]``).

    Args:
        model: A model name or local path (loaded now with :func:`mxbai_rerank.load`), or a
            loaded reranker (anything with the library's ``rank()``). With ``base_url``: the
            served model's id, sent with each request (optional).
        base_url: Rank through a server speaking the Mixedbread rerank API instead
            (``mxbai-rerank serve``); checked for an answer now.
        api_key: The server's API key (sent as ``Authorization: Bearer``).
        top_n: How many nodes to keep, best first; ``None``: all of them, reordered.
        instruction: Optional task instruction (v2 models).
        rank_fields: Score these fields of ``{**metadata, "text": content}`` instead of the content.
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
            extra="llamaindex",
        )
        super().__init__(**fields)
        self._client = client

    @classmethod
    def class_name(cls) -> str:
        return "MxbaiRerankPostprocessor"

    @property
    def reranker(self) -> Any:
        """The local reranker (``None`` when ranking through a server)."""
        return self._client.reranker if isinstance(self._client, LocalClient) else None

    def _prepare(
        self, nodes: object, query_bundle: QueryBundle | None
    ) -> tuple[list[NodeWithScore], list[JsonDocument], str]:
        check_positive(self.top_n, "top_n")
        if isinstance(nodes, (str, bytes)) or not isinstance(nodes, Sequence):
            raise TypeError(f"nodes must be a list of llama_index NodeWithScore objects, got {type(nodes).__name__}")
        for i, node in enumerate(nodes):
            if not isinstance(node, _schema.NodeWithScore):
                raise TypeError(f"nodes[{i}] must be a llama_index NodeWithScore, got {type_name(node)}")
        if query_bundle is None:
            raise ValueError("query_bundle (or query_str) is needed to rerank nodes")
        if not isinstance(query_bundle, _schema.QueryBundle):
            raise TypeError(f"query_bundle must be a llama_index QueryBundle, got {type(query_bundle).__name__}")
        none = _schema.MetadataMode.NONE
        if self.rank_fields is None:
            inputs: list[JsonDocument] = [n.node.get_content(metadata_mode=none) for n in nodes]
        else:
            inputs = [{**n.node.metadata, "text": n.node.get_content(metadata_mode=none)} for n in nodes]
        return list(nodes), inputs, check_query(query_bundle.query_str, "query_bundle.query_str")

    def _event(self, nodes: list[NodeWithScore], query: str) -> Any:
        payload = _callbacks.EventPayload
        return self.callback_manager.event(
            _callbacks.CBEventType.RERANKING,
            payload={
                payload.NODES: nodes,
                payload.MODEL_NAME: str(self.model) if isinstance(self.model, str) else type(self.model).__name__,
                payload.QUERY_STR: query,
                payload.TOP_K: self.top_n,
            },
        )

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        nodes, inputs, query = self._prepare(nodes, query_bundle)
        with self._event(nodes, query) as event:
            out = _rescored(nodes, self._client.rank(query, inputs, self.top_n))
            event.on_end(payload={_callbacks.EventPayload.NODES: out})
        return out

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        nodes, inputs, query = self._prepare(nodes, query_bundle)
        with self._event(nodes, query) as event:
            out = _rescored(nodes, await self._client.arank(query, inputs, self.top_n))
            event.on_end(payload={_callbacks.EventPayload.NODES: out})
        return out


def _rescored(nodes: list[NodeWithScore], ranked: list[Ranked]) -> list[NodeWithScore]:
    return [_schema.NodeWithScore(node=nodes[r.index].node, score=r.score) for r in ranked]
