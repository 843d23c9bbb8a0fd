"""LangChain: ``MxbaiRerankCompressor`` in a ``ContextualCompressionRetriever``, local and served."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest
from _integration_data import API_KEY, ATOL, INSTRUCTION, METAS, QUERY, TEXTS, assert_matches, library_ranking
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever

from mxbai_rerank._extras import MissingExtraError
from mxbai_rerank.integrations import RerankServerError
from mxbai_rerank.integrations.langchain import MxbaiRerankCompressor

DOCS = [Document(page_content=text, metadata=meta) for text, meta in zip(TEXTS, METAS)]


class ListRetriever(BaseRetriever):
    """A first-stage retriever that returns every document, in corpus order."""

    docs: list[Document]

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return list(self.docs)


def _got(docs: Any) -> list[tuple[int, float]]:
    return [(TEXTS.index(d.page_content), d.metadata["relevance_score"]) for d in docs]


def test_retriever_chain_ranks_like_the_library(v2_reranker: Any) -> None:
    compressor = MxbaiRerankCompressor(v2_reranker, top_n=3)
    retriever = ContextualCompressionRetriever(base_compressor=compressor, base_retriever=ListRetriever(docs=DOCS))
    got = retriever.invoke(QUERY)
    assert_matches(_got(got), library_ranking(v2_reranker, TEXTS, 3))
    # copies: metadata kept, inputs untouched
    assert all(d.metadata["title"] == METAS[TEXTS.index(d.page_content)]["title"] for d in got)
    assert all("relevance_score" not in d.metadata for d in DOCS)
    # async: acompress_documents through the retriever's ainvoke
    assert _got(asyncio.run(retriever.ainvoke(QUERY))) == _got(got)


def test_rank_fields_and_instruction(v2_reranker: Any) -> None:
    compressor = MxbaiRerankCompressor(v2_reranker, top_n=None, rank_fields=["title", "page_content"])
    objects = [{**meta, "page_content": text} for text, meta in zip(TEXTS, METAS)]
    want = library_ranking(v2_reranker, objects, None, rank_fields=["title", "page_content"])
    assert_matches(_got(compressor.compress_documents(DOCS, QUERY)), want)
    assert [i for i, _ in want] != [i for i, _ in library_ranking(v2_reranker, TEXTS, None)]

    compressor = MxbaiRerankCompressor(v2_reranker, top_n=4, instruction=INSTRUCTION)
    want = library_ranking(v2_reranker, TEXTS, 4, instruction=INSTRUCTION)
    assert_matches(_got(compressor.compress_documents(DOCS, QUERY)), want)


def test_v1_model(v1_reranker: Any) -> None:
    compressor = MxbaiRerankCompressor(v1_reranker, top_n=2)
    assert_matches(_got(compressor.compress_documents(DOCS, QUERY)), library_ranking(v1_reranker, TEXTS, 2))


def test_server_mode(rerank_server: Any, v2_reranker: Any) -> None:
    compressor = MxbaiRerankCompressor(base_url=rerank_server.base_url, api_key=API_KEY, top_n=3)
    retriever = ContextualCompressionRetriever(base_compressor=compressor, base_retriever=ListRetriever(docs=DOCS))
    want = library_ranking(v2_reranker, TEXTS, 3)
    assert_matches(_got(retriever.invoke(QUERY)), want, ATOL)
    assert_matches(_got(asyncio.run(retriever.ainvoke(QUERY))), want, ATOL)
    assert compressor.reranker is None

    fields = MxbaiRerankCompressor(
        base_url=rerank_server.base_url + "/v1/", api_key=API_KEY, top_n=None, rank_fields="title"
    )
    want = library_ranking(v2_reranker, [m["title"] for m in METAS], None)
    assert_matches(_got(fields.compress_documents(DOCS, QUERY)), want, ATOL)

    # Long documents chunked by the server: the best window's span reaches the metadata.
    chunk = {"long_documents": "chunk", "chunk_size": 8, "chunk_stride": 4}
    chunked = MxbaiRerankCompressor(base_url=rerank_server.base_url, api_key=API_KEY, top_n=None, **chunk)
    got = chunked.compress_documents(DOCS, QUERY)
    local = v2_reranker.rank(QUERY, TEXTS, **chunk)
    assert_matches(_got(got), library_ranking(v2_reranker, TEXTS, None, **chunk), ATOL)
    assert {TEXTS.index(d.page_content): d.metadata["relevance_span"] for d in got} == {
        r.index: list(r.span) for r in local
    }
    assert any(span != [0, len(TEXTS[i])] for i, span in ((r.index, list(r.span)) for r in local))  # windows


def test_server_errors(rerank_server: Any, dead_url: str) -> None:
    with pytest.raises(ConnectionError, match=f"base_url='{dead_url}'"):
        MxbaiRerankCompressor(base_url=dead_url)
    wrong_key = MxbaiRerankCompressor(base_url=rerank_server.base_url, api_key="wrong")
    with pytest.raises(RerankServerError, match=r"401.*api_key") as info:
        wrong_key.compress_documents(DOCS, QUERY)
    assert info.value.status == 401


def test_rank_options_are_request_fields(recording_server: Any) -> None:
    compressor = MxbaiRerankCompressor(
        "served-name",
        base_url=recording_server.base_url,
        api_key="k",
        top_n=2,
        instruction=INSTRUCTION,
        long_documents="chunk",
        chunk_size=64,
    )
    got = compressor.compress_documents(DOCS[:3], QUERY)
    assert [d.page_content for d in got] == [TEXTS[2], TEXTS[1]]  # the fake server reverses
    body = recording_server.bodies[-1]
    assert body == {
        "query": QUERY,
        "input": TEXTS[:3],
        "top_k": 2,
        "model": "served-name",
        "instruction": INSTRUCTION,
        "long_documents": "chunk",
        "chunk_size": 64,
        "return_input": False,
    }
    assert recording_server.headers[-1]["Authorization"] == "Bearer k"
    assert compressor.compress_documents([], QUERY) == []
    assert len(recording_server.bodies) == 1


def test_bad_input(v2_reranker: Any) -> None:
    compressor = MxbaiRerankCompressor(v2_reranker)
    with pytest.raises(TypeError, match=r"documents\[1\] must be a langchain_core Document, got str"):
        compressor.compress_documents([DOCS[0], "plain text"], QUERY)
    with pytest.raises(TypeError, match="documents must be a list"):
        compressor.compress_documents(DOCS[0], QUERY)
    with pytest.raises(TypeError, match="query must be a str"):
        compressor.compress_documents(DOCS, None)  # type: ignore[arg-type]
    for bad, error in ((0, ValueError), (-2, ValueError), ("3", TypeError), (True, TypeError)):
        with pytest.raises(error, match="top_n must be a positive integer"):
            MxbaiRerankCompressor(v2_reranker, top_n=bad)
    with pytest.raises(TypeError, match="model must be a model name or path, or a loaded reranker"):
        MxbaiRerankCompressor(DOCS[0])
    with pytest.raises(TypeError, match="give model"):
        MxbaiRerankCompressor()
    with pytest.raises(ValueError, match="base_url must be an http"):
        MxbaiRerankCompressor(base_url="localhost:8000")
    with pytest.raises(TypeError, match="with base_url, model names the served model"):
        MxbaiRerankCompressor(v2_reranker, base_url="http://127.0.0.1:1")
    with pytest.raises(ValueError, match="api_key is for a server"):
        MxbaiRerankCompressor(v2_reranker, api_key="k")
    with pytest.raises(TypeError, match=r"unexpected rank option.*top_k"):
        MxbaiRerankCompressor(v2_reranker, top_k=3)
    with pytest.raises(ValueError, match="normalize apply to a local model only"):
        MxbaiRerankCompressor(base_url="http://127.0.0.1:1", normalize=False)
    with pytest.raises(TypeError, match="rank_fields must be"):
        MxbaiRerankCompressor(v2_reranker, rank_fields=[])
    # an unknown rank option reaches the library, which names it
    with pytest.raises(TypeError, match="no_such_option"):
        MxbaiRerankCompressor(v2_reranker, no_such_option=1).compress_documents(DOCS, QUERY)


def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "langchain_core.documents", None)
    monkeypatch.delitem(sys.modules, "mxbai_rerank.integrations.langchain")
    with pytest.raises(MissingExtraError, match=r"pip install 'mxbai-rerank\[langchain\]'"):
        import mxbai_rerank.integrations.langchain  # noqa: F401


def test_chunking_options_reach_the_library(v2_reranker: Any) -> None:
    options = {"long_documents": "chunk", "chunk_size": 8, "chunk_stride": 4, "chunk_aggregate": "mean"}
    long_texts = [f"{TEXTS[i]} {TEXTS[-1 - i]}" for i in range(4)]
    compressor = MxbaiRerankCompressor(v2_reranker, top_n=None, **options)
    got = compressor.compress_documents([Document(page_content=text) for text in long_texts], QUERY)
    want = v2_reranker.rank(QUERY, long_texts, top_k=4, normalize=True, **options)
    assert [(long_texts.index(d.page_content), d.metadata["relevance_score"]) for d in got] == [
        (r.index, r.score) for r in want
    ]
    assert [tuple(d.metadata["relevance_span"]) for d in got] == [r.span for r in want]
    assert all(r.span is not None for r in want)
    # the options changed the scores: without them the library scores otherwise
    plain = v2_reranker.rank(QUERY, long_texts, top_k=4, normalize=True)
    assert sorted((r.index, r.score) for r in plain) != sorted((r.index, r.score) for r in want)
