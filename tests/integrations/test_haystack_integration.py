"""Haystack: ``MxbaiRerankRanker`` after a BM25 retriever, local and served, saved and loaded."""

from __future__ import annotations

import asyncio
import inspect
import sys
from pathlib import Path
from typing import Any

import pytest
from _integration_data import API_KEY, ATOL, INSTRUCTION, METAS, QUERY, TEXTS, assert_matches, library_ranking
from haystack import Document, Pipeline
from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
from haystack.document_stores.in_memory import InMemoryDocumentStore
from haystack.utils import Secret

from mxbai_rerank._extras import MissingExtraError
from mxbai_rerank.integrations.haystack import MxbaiRerankRanker

DOCS = [Document(content=text, meta=meta) for text, meta in zip(TEXTS, METAS)]
MODULE = "mxbai_rerank.integrations.haystack"
BM25_QUERY = "novel"


def _pipeline(ranker: MxbaiRerankRanker) -> Pipeline:
    store = InMemoryDocumentStore()
    store.write_documents(DOCS)
    pipeline = Pipeline()
    pipeline.add_component("retriever", InMemoryBM25Retriever(store, top_k=len(DOCS)))
    pipeline.add_component("ranker", ranker)
    pipeline.connect("retriever.documents", "ranker.documents")
    return pipeline


def _from_dict(data: dict[str, Any]) -> Pipeline:
    """Haystack 3 loads only trusted modules; Haystack 2 has no allowlist."""
    if "allowed_modules" in inspect.signature(Pipeline.from_dict).parameters:
        return Pipeline.from_dict(data, allowed_modules=[MODULE])
    return Pipeline.from_dict(data)


def _inputs(**ranker: Any) -> dict[str, Any]:
    return {"retriever": {"query": BM25_QUERY}, "ranker": {"query": QUERY, **ranker}}


def _got(result: dict[str, Any]) -> list[tuple[int, float]]:
    return [(TEXTS.index(d.content), d.score) for d in result["ranker"]["documents"]]


def _want(pipeline: Pipeline, reranker: Any, top_n: int | None) -> list[tuple[int, float]]:
    """The library's ranking of what the pipeline's retriever finds (which Haystack versions differ on)."""
    found = pipeline.get_component("retriever").run(query=BM25_QUERY)["documents"]
    retrieved = [TEXTS.index(d.content) for d in found]
    assert len(retrieved) >= 3
    ranked = library_ranking(reranker, [TEXTS[i] for i in retrieved], top_n)
    return [(retrieved[i], s) for i, s in ranked]


async def _run_async(pipeline: Pipeline, inputs: dict[str, Any]) -> dict[str, Any]:
    if hasattr(pipeline, "run_async"):  # Haystack 3
        return await pipeline.run_async(inputs)
    from haystack import AsyncPipeline  # Haystack 2

    return await AsyncPipeline.from_dict(pipeline.to_dict()).run_async(inputs)


def test_pipeline_ranks_like_the_library_and_round_trips(v2_model_dir: Path, v2_reranker: Any) -> None:
    ranker = MxbaiRerankRanker(str(v2_model_dir), top_k=3, model_kwargs={"device": "cpu", "torch_dtype": "float32"})
    pipeline = _pipeline(ranker)
    # Only the loaded copy runs (one model load): the model loads in the pipeline's warm_up.
    loaded = _from_dict(pipeline.to_dict())
    assert loaded.to_dict() == pipeline.to_dict()
    want = _want(loaded, v2_reranker, 3)
    assert_matches(_got(loaded.run(_inputs())), want)
    assert all(d.score is None for d in DOCS)  # copies
    assert_matches(_got(loaded.run(_inputs(top_k=2))), want[:2])
    assert_matches(_got(asyncio.run(_run_async(loaded, _inputs()))), want)


def test_rank_fields_instruction_and_top_k(v2_reranker: Any) -> None:
    ranker = MxbaiRerankRanker(v2_reranker, top_k=None, rank_fields=["title", "content"])
    objects = [{**meta, "content": text} for text, meta in zip(TEXTS, METAS)]
    got = ranker.run(query=QUERY, documents=DOCS)["documents"]
    want = library_ranking(v2_reranker, objects, None, rank_fields=["title", "content"])
    assert_matches([(TEXTS.index(d.content), d.score) for d in got], want)
    assert [d.id for d in got] == [DOCS[i].id for i, _ in want]

    ranker = MxbaiRerankRanker(v2_reranker, instruction=INSTRUCTION)
    got = asyncio.run(ranker.run_async(query=QUERY, documents=DOCS, top_k=4))["documents"]
    want = library_ranking(v2_reranker, TEXTS, 4, instruction=INSTRUCTION)
    assert_matches([(TEXTS.index(d.content), d.score) for d in got], want)


def test_server_mode(rerank_server: Any, v2_reranker: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MXBAI_TEST_RERANK_KEY", API_KEY)
    ranker = MxbaiRerankRanker(
        base_url=rerank_server.base_url, api_key=Secret.from_env_var("MXBAI_TEST_RERANK_KEY"), top_k=3
    )
    pipeline = _from_dict(_pipeline(ranker).to_dict())
    assert "integration-test-key" not in str(pipeline.to_dict())
    want = _want(pipeline, v2_reranker, 3)
    assert_matches(_got(pipeline.run(_inputs())), want, ATOL)
    assert_matches(_got(asyncio.run(_run_async(pipeline, _inputs()))), want, ATOL)


def test_bad_input(v2_reranker: Any, dead_url: str) -> None:
    ranker = MxbaiRerankRanker(v2_reranker)
    with pytest.raises(TypeError, match="loaded reranker cannot be serialised"):
        ranker.to_dict()
    with pytest.raises(TypeError, match=r"documents\[0\] must be a haystack Document, got str"):
        ranker.run(query=QUERY, documents=TEXTS)
    langchain_document = pytest.importorskip("langchain_core.documents").Document("text")
    with pytest.raises(TypeError, match=r"documents\[0\] must be a haystack Document, got langchain_core\.documents"):
        ranker.run(query=QUERY, documents=[langchain_document])
    with pytest.raises(ValueError, match=r"documents\[0\] has no text content"):
        ranker.run(query=QUERY, documents=[Document(meta={"a": 1})])
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        ranker.run(query=QUERY, documents=DOCS, top_k=0)
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        MxbaiRerankRanker(v2_reranker, top_k=-1)
    with pytest.raises(TypeError, match="api_key must be a haystack Secret"):
        MxbaiRerankRanker(base_url=dead_url, api_key=123)
    assert ranker.run(query=QUERY, documents=[]) == {"documents": []}

    unreachable = _pipeline(MxbaiRerankRanker(base_url=dead_url))
    with pytest.raises(ConnectionError, match=f"base_url='{dead_url}'"):
        unreachable.warm_up()
    with pytest.raises(ConnectionError, match=f"base_url='{dead_url}'"):
        asyncio.run(MxbaiRerankRanker(base_url=dead_url).run_async(query=QUERY, documents=DOCS))


def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "haystack", None)
    monkeypatch.delitem(sys.modules, MODULE)
    with pytest.raises(MissingExtraError, match=r"pip install 'mxbai-rerank\[haystack\]'"):
        import mxbai_rerank.integrations.haystack  # noqa: F401
