"""LlamaIndex: ``MxbaiRerankPostprocessor`` in a query engine, local and served."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest
from _integration_data import API_KEY, ATOL, INSTRUCTION, METAS, QUERY, TEXTS, assert_matches, library_ranking
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.response_synthesizers.no_text import NoText
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from mxbai_rerank._extras import MissingExtraError
from mxbai_rerank.integrations import RerankServerError
from mxbai_rerank.integrations.llamaindex import MxbaiRerankPostprocessor

NODES = [TextNode(text=text, metadata=meta) for text, meta in zip(TEXTS, METAS)]


class ListRetriever(BaseRetriever):
    """A first-stage retriever that returns every node, in corpus order."""

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return [NodeWithScore(node=node, score=1.0) for node in NODES]


def _engine(postprocessor: MxbaiRerankPostprocessor) -> RetrieverQueryEngine:
    """Every node retrieved, reranked, no LLM call (``NoText`` answers with the source nodes)."""
    return RetrieverQueryEngine(
        retriever=ListRetriever(),
        response_synthesizer=NoText(llm=MockLLM()),
        node_postprocessors=[postprocessor],
    )


def _got(nodes: Any) -> list[tuple[int, float]]:
    return [(TEXTS.index(n.node.get_content()), n.score) for n in nodes]


def test_query_engine_ranks_like_the_library(v2_reranker: Any) -> None:
    engine = _engine(MxbaiRerankPostprocessor(v2_reranker, top_n=3))
    want = library_ranking(v2_reranker, TEXTS, 3)
    assert_matches(_got(engine.query(QUERY).source_nodes), want)
    assert_matches(_got(asyncio.run(engine.aquery(QUERY)).source_nodes), want)


def test_rank_fields_and_instruction(v2_reranker: Any) -> None:
    postprocessor = MxbaiRerankPostprocessor(v2_reranker, top_n=None, rank_fields=["title", "text"])
    objects = [{**meta, "text": text} for text, meta in zip(TEXTS, METAS)]
    want = library_ranking(v2_reranker, objects, None, rank_fields=["title", "text"])
    nodes = [NodeWithScore(node=n, score=0.5) for n in NODES]
    assert_matches(_got(postprocessor.postprocess_nodes(nodes, query_str=QUERY)), want)
    assert all(n.score == 0.5 for n in nodes)  # inputs untouched

    postprocessor = MxbaiRerankPostprocessor(v2_reranker, top_n=2, instruction=INSTRUCTION)
    want = library_ranking(v2_reranker, TEXTS, 2, instruction=INSTRUCTION)
    assert_matches(_got(postprocessor.postprocess_nodes(nodes, QueryBundle(QUERY))), want)


def test_server_mode(rerank_server: Any, v2_reranker: Any) -> None:
    postprocessor = MxbaiRerankPostprocessor(base_url=rerank_server.base_url, api_key=API_KEY, top_n=3)
    engine = _engine(postprocessor)
    want = library_ranking(v2_reranker, TEXTS, 3)
    assert_matches(_got(engine.query(QUERY).source_nodes), want, ATOL)
    assert_matches(_got(asyncio.run(engine.aquery(QUERY)).source_nodes), want, ATOL)

    fields = MxbaiRerankPostprocessor(base_url=rerank_server.base_url, api_key=API_KEY, rank_fields="title")
    want = library_ranking(v2_reranker, [m["title"] for m in METAS], 3)
    nodes = [NodeWithScore(node=n) for n in NODES]
    assert_matches(_got(asyncio.run(fields.apostprocess_nodes(nodes, query_str=QUERY))), want, ATOL)


def test_server_errors(rerank_server: Any, dead_url: str) -> None:
    with pytest.raises(ConnectionError, match=f"base_url='{dead_url}'"):
        MxbaiRerankPostprocessor(base_url=dead_url)
    wrong_key = MxbaiRerankPostprocessor(base_url=rerank_server.base_url)
    with pytest.raises(RerankServerError, match="401"):
        wrong_key.postprocess_nodes([NodeWithScore(node=NODES[0])], query_str=QUERY)


def test_bad_input(v2_reranker: Any) -> None:
    postprocessor = MxbaiRerankPostprocessor(v2_reranker)
    with pytest.raises(
        TypeError, match=r"nodes\[0\] must be a llama_index NodeWithScore, got llama_index\.core\.schema\.TextNode"
    ):
        postprocessor.postprocess_nodes(NODES, query_str=QUERY)
    with pytest.raises(ValueError, match="query_bundle"):
        postprocessor.postprocess_nodes([NodeWithScore(node=NODES[0])])
    for bad in (0, 1.5):
        with pytest.raises((TypeError, ValueError), match="top_n must be a positive integer"):
            MxbaiRerankPostprocessor(v2_reranker, top_n=bad)
    with pytest.raises(TypeError, match="model must be a model name or path"):
        MxbaiRerankPostprocessor(NODES[0])
    assert postprocessor.postprocess_nodes([], query_str=QUERY) == []


def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "llama_index.core.postprocessor.types", None)
    monkeypatch.delitem(sys.modules, "mxbai_rerank.integrations.llamaindex")
    with pytest.raises(MissingExtraError, match=r"pip install 'mxbai-rerank\[llamaindex\]'"):
        import mxbai_rerank.integrations.llamaindex  # noqa: F401
