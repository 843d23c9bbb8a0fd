"""``create_app`` in process (httpx's ASGI transport): settings, unexpected errors, batching counters."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import httpx
import pytest

from mxbai_rerank import EncodedPairs
from mxbai_rerank.server import ServerSettings, create_app


class _Exploding:
    """The real reranker, except that tokenizing the query "boom" raises an unexpected error."""

    def __init__(self, reranker: Any) -> None:
        self._reranker = reranker

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reranker, name)

    def encode_pairs(self, queries: Sequence[str], documents: Sequence[Any], **kwargs: Any) -> EncodedPairs:
        if "boom" in queries:
            raise RuntimeError("tokenizer exploded")
        return self._reranker.encode_pairs(queries, documents, **kwargs)


async def _run(app: Any, requests: list[tuple[str, dict[str, Any]]]) -> tuple[list[httpx.Response], str, int]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        responses = await asyncio.gather(*(client.post(path, json=body) for path, body in requests))
        metrics = (await client.get("/metrics")).text
        health = (await client.get("/health")).status_code
    return list(responses), metrics, health


def test_settings_are_validated() -> None:
    for bad in (
        {"max_client_batch_size": 0},
        {"max_concurrent_requests": 0},
        {"max_batch_tokens": 0},
        {"api_key": ""},
        {"payload_limit": 0},
        {"max_text_chars": 0},
        {"header_timeout": 0},
        {"body_timeout": -1},
        {"graceful_shutdown_timeout": -1},
    ):
        with pytest.raises(ValueError):
            ServerSettings(**bad)


def test_create_app_refuses_what_is_not_a_scorer() -> None:
    with pytest.raises(TypeError, match="Scorer"):
        create_app(object())  # type: ignore[arg-type]


def test_unexpected_errors_are_logged_with_a_request_id_and_answered_without_internals(
    v2_reranker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(_Exploding(v2_reranker), ServerSettings(model_name="tiny", warmup=False))
    good = {"query": "what is a fox", "input": ["a fox", "a dog"]}
    with caplog.at_level(logging.ERROR, logger="mxbai_rerank.server"):
        responses, metrics, health = asyncio.run(
            _run(app, [("/v1/reranking", {"query": "boom", "input": ["a"]}), ("/v1/reranking", good)])
        )
    assert responses[0].status_code == 500
    body = responses[0].json()
    request_id = responses[0].headers["x-request-id"]
    assert "exploded" not in responses[0].text and "RuntimeError" not in responses[0].text
    assert request_id in body["message"] and body["error_type"] == "internal"
    # The log has what the client was not told, under the id the client was told.
    logged = [r for r in caplog.records if request_id in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None
    assert "tokenizer exploded" in str(logged[0].exc_info[1])
    assert responses[1].status_code == 200 and len(responses[1].json()["data"]) == 2
    assert responses[1].headers["x-request-id"] not in (request_id, "")
    assert 'mxbai_rerank_request_failures_total{endpoint="/v1/reranking",kind="internal"} 1.0' in metrics
    assert health == 200


def test_concurrent_requests_share_scoring_calls(v2_reranker: Any) -> None:
    app = create_app(v2_reranker, ServerSettings(warmup=False))
    docs = [f"document {i} about foxes, dogs and other animals" for i in range(6)]
    requests = [("/rerank", {"query": f"query {i}", "texts": docs}) for i in range(24)]
    responses, metrics, _ = asyncio.run(_run(app, requests))
    assert [r.status_code for r in responses] == [200] * len(requests)
    calls = sum(
        float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith("mxbai_rerank_batches_total")
    )
    assert 1 <= calls < len(requests)
    for (_, body), response in zip(requests, responses, strict=True):
        expected = v2_reranker.rank(body["query"], docs, top_k=len(docs), normalize=True)
        assert [r["index"] for r in response.json()] == [r.index for r in expected]


class _RecordingTokenizer:
    """A tokenizer that records the length of every text it is asked to tokenize."""

    def __init__(self, tokenizer: Any, seen: list[int]) -> None:
        self._tokenizer = tokenizer
        self._seen = seen

    def __call__(self, texts: Any, *args: Any, **kwargs: Any) -> Any:
        self._seen.extend(len(t) for t in ([texts] if isinstance(texts, str) else texts))
        return self._tokenizer(texts, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tokenizer, name)


class _RecordingScorer:
    def __init__(self, reranker: Any, seen: list[int]) -> None:
        self._reranker = reranker
        self._seen = seen

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reranker, name)

    def tokenizer_copy(self) -> Any:
        return _RecordingTokenizer(self._reranker.tokenizer_copy(), self._seen)


def test_server_truncation_never_tokenizes_more_than_can_survive(v2_reranker: Any) -> None:
    """max_tokens_per_doc and TEI's Left/strict truncation cut by characters before tokenizing,
    and keep exactly the tokens a whole-text tokenization would keep."""
    from mxbai_rerank.server._truncation import DocumentTruncator, InputTooLongError

    seen: list[int] = []
    truncator = DocumentTruncator(_RecordingScorer(v2_reranker, seen))
    long = "the quick red fox jumps over the lazy dog; " * 20_000  # 860,000 characters
    keep = 7
    seen.clear()
    head, short = truncator.cut([long, "short text"], keep, keep="start")
    (tail,) = truncator.cut([long], keep, keep="end")
    with pytest.raises(InputTooLongError, match=r"texts\[1\] has more than 7 tokens"):
        truncator.check_fits(["tiny", long], keep, "texts")
    assert seen and max(seen) <= truncator.char_bound(keep) < len(long)
    offsets = v2_reranker.tokenizer(long, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    assert head == long[: offsets[keep - 1][1]]
    assert tail == long[offsets[len(offsets) - keep][0] :]
    assert short == "short text"


def test_long_documents_chunk_in_all_three_apis(v2_reranker: Any) -> None:
    """The request field scores long documents by windows, exactly as the library does."""
    app = create_app(v2_reranker, ServerSettings(model_name="tiny", warmup=False))
    query = "which sentence mentions the fox"
    docs = ["".join(f"Sentence {i} is about the weather. " for i in range(120)) + "The fox is red.", "A short one."]
    chunk = {"long_documents": "chunk", "chunk_size": 64, "chunk_aggregate": "max"}
    expected = v2_reranker.score_pairs([query] * 2, docs, normalize=True, **chunk)
    truncated = v2_reranker.score_pairs([query] * 2, docs, normalize=True)
    assert abs(expected[0] - truncated[0]) > 1e-4  # the option changes the long document's score
    requests = [
        ("/v1/reranking", {"query": query, "input": docs, **chunk}),
        ("/v2/rerank", {"query": query, "documents": docs, **chunk}),
        ("/rerank", {"query": query, "texts": docs, **chunk}),
        (
            "/v1/reranking",
            {"query": query, "input": docs, "long_documents": "chunk", "chunk_size": 8, "chunk_stride": 8},
        ),
        ("/v1/reranking", {"query": query, "input": docs, "long_documents": "split"}),
    ]
    responses, _, _ = asyncio.run(_run(app, requests))
    mixedbread = {r["index"]: r["score"] for r in responses[0].json()["data"]}
    cohere = {r["index"]: r["relevance_score"] for r in responses[1].json()["results"]}
    tei = {r["index"]: r["score"] for r in responses[2].json()}
    for got in (mixedbread, cohere, tei):
        assert [got[0], got[1]] == pytest.approx(expected.tolist(), abs=1e-5)
    # Each result names its best window, as the library's RankResult.span does.
    spans = {r.index: list(r.span) for r in v2_reranker.rank(query, docs, **chunk)}
    assert spans[0][1] - spans[0][0] < len(docs[0])  # a window, not the whole long document
    assert spans[1] == [0, len(docs[1])]  # the short document is its own window
    for items in (responses[0].json()["data"], responses[1].json()["results"], responses[2].json()):
        assert {r["index"]: r["span"] for r in items} == spans
    plain, _, _ = asyncio.run(_run(app, [("/v1/reranking", {"query": query, "input": docs})]))
    assert all("span" not in r for r in plain[0].json()["data"])  # truncation: no spans
    assert responses[3].status_code == 422 and "chunk_stride" in responses[3].json()["message"]
    assert responses[4].status_code == 422 and responses[4].json()["param"] == "long_documents"
