"""A real server on the tiny v1 (DeBERTa) model: scores, truncation options, backpressure and SIGTERM.

The server runs with a small window (``--max-length 40``) so that truncation is cheap to
exercise, and a tiny forward-pass budget (``--max-batch-tokens 64``, one pair per pass) so that
a request of a few hundred documents stays in flight long enough to observe.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cohere
import httpx
import mixedbread
import numpy as np
import pytest
import torch
from _server_process import ServerProcess, metric, slow_docs, start_server, wait_in_flight

from mxbai_rerank import MxbaiRerankV1

MAX_LENGTH = 40
MAX_CONCURRENT = 3
SERVER_ARGS = (
    "--max-length",
    str(MAX_LENGTH),
    "--max-batch-tokens",
    "64",
    "--max-concurrent-requests",
    str(MAX_CONCURRENT),
)
QUERY = "Which animal is red and quick?"
DOCS = [
    "The red fox is a quick animal of the northern hemisphere.",
    "Paris is the capital and largest city of France.",
    "A quick brown dog sleeps in the sun.",
    "Rockets burn fuel to push gases out of a nozzle.",
]
ATOL = 1e-4


@pytest.fixture(scope="module")
def server(v1_model_dir: Path) -> Iterator[ServerProcess]:
    proc = start_server(v1_model_dir, *SERVER_ARGS)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def library(v1_model_dir: Path) -> MxbaiRerankV1:
    """The library with the server's window: what every server answer is compared to."""
    return MxbaiRerankV1(str(v1_model_dir), device="cpu", torch_dtype=torch.float32, max_length=MAX_LENGTH)


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=120) as c:
        yield c


def _check(got: Sequence[tuple[int, float]], expected: Sequence[Any]) -> None:
    want = {r.index: r.score for r in expected}
    assert sorted(i for i, _ in got) == sorted(want)
    for index, score in got:
        assert abs(score - want[index]) <= ATOL, (index, score, want[index])
    assert [i for i, _ in got] == [r.index for r in expected]


def test_v1_served_on_every_shape_without_an_api_key(
    server: ServerProcess, client: httpx.Client, library: MxbaiRerankV1
) -> None:
    expected = library.rank(QUERY, DOCS, top_k=len(DOCS))
    assert all(0.0 < r.score < 1.0 for r in expected)

    mxb = mixedbread.Mixedbread(api_key="unused", base_url=server.base_url, max_retries=0)
    _check([(d.index, d.score) for d in mxb.rerank(query=QUERY, input=DOCS).data], expected)
    co = cohere.ClientV2(api_key="unused", base_url=server.base_url)
    result = co.rerank(model=str(library.model_name_or_path), query=QUERY, documents=DOCS)
    _check([(r.index, r.relevance_score) for r in result.results], expected)
    tei = client.post("/rerank", json={"query": QUERY, "texts": DOCS}).json()
    _check([(r["index"], r["score"]) for r in tei], expected)

    # raw_scores: the cross-encoder's logit, i.e. the score before the sigmoid.
    raw = client.post("/rerank", json={"query": QUERY, "texts": DOCS, "raw_scores": True}).json()
    logits = library.score_encoded(library.encode_pairs([QUERY] * len(DOCS), DOCS))
    for r in raw:
        assert abs(r["score"] - float(logits[r["index"]])) <= ATOL
    by_index = {r.index: r.score for r in expected}
    for r in raw:
        assert abs(1.0 / (1.0 + np.exp(-r["score"])) - by_index[r["index"]]) <= ATOL


def test_v1_refuses_an_instruction(client: httpx.Client) -> None:
    response = client.post("/v1/reranking", json={"query": QUERY, "input": DOCS, "instruction": "Find animals."})
    assert response.status_code == 422
    assert "instruction" in response.json()["message"]
    assert response.json()["param"] == "instruction" and response.json()["error_type"] == "validation"


def test_tei_truncation_options(client: httpx.Client, library: MxbaiRerankV1) -> None:
    tail = "the red fox runs home " * 20
    docs = ["alpha beta gamma " * 20 + tail, "omega sigma delta " * 20 + tail, DOCS[1]]
    assert all(len(ids) >= MAX_LENGTH for ids in library.encode_pairs([QUERY] * 2, docs[:2]).input_ids)

    def scores(**options: Any) -> dict[int, float]:
        response = client.post("/rerank", json={"query": QUERY, "texts": docs, **options})
        assert response.status_code == 200, response.text
        return {r["index"]: r["score"] for r in response.json()}

    right = scores()
    _check(sorted(right.items()), library.rank(QUERY, docs, top_k=3, sort=False))
    assert abs(right[0] - right[1]) > 1e-6  # the kept heads differ
    left = scores(truncation_direction="Left")
    assert abs(left[0] - left[1]) <= 1e-6  # the kept tails are the same text
    assert abs(left[2] - right[2]) <= ATOL  # a short document is untouched
    assert left[0] != pytest.approx(right[0], abs=1e-6)

    refused = client.post("/rerank", json={"query": QUERY, "texts": [DOCS[0], docs[1]], "truncate": False})
    assert refused.status_code == 413
    assert "texts[1]" in refused.json()["message"] and "truncate" in refused.json()["message"]
    fits = client.post("/rerank", json={"query": QUERY, "texts": DOCS, "truncate": False})
    assert fits.status_code == 200


def test_cohere_max_tokens_per_doc_keeps_the_head(client: httpx.Client) -> None:
    head = "the red fox jumps over the lazy dog near the river"
    docs = [f"{head} and then sleeps all day long", f"{head} while rockets launch into space tonight"]

    def scores(**options: Any) -> list[float]:
        response = client.post("/v2/rerank", json={"query": QUERY, "documents": docs, **options})
        assert response.status_code == 200, response.text
        return [r["relevance_score"] for r in sorted(response.json()["results"], key=lambda r: r["index"])]

    whole = scores()
    assert abs(whole[0] - whole[1]) > 1e-6
    cut = scores(max_tokens_per_doc=8)
    assert abs(cut[0] - cut[1]) <= 1e-6


def test_past_max_concurrent_requests_answers_429_at_once(server: ServerProcess, client: httpx.Client) -> None:
    async def scenario() -> tuple[list[httpx.Response], httpx.Response, float]:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=120) as ac:
            slow = [
                asyncio.create_task(ac.post("/rerank", json={"query": QUERY, "texts": slow_docs(40, f"s{i}")}))
                for i in range(MAX_CONCURRENT)
            ]
            await wait_in_flight(server.base_url, MAX_CONCURRENT)
            started = time.perf_counter()
            extra = await ac.post("/rerank", json={"query": QUERY, "texts": DOCS})
            elapsed = time.perf_counter() - started
            return list(await asyncio.gather(*slow)), extra, elapsed

    slow, extra, elapsed = asyncio.run(scenario())
    assert extra.status_code == 429
    assert f"{MAX_CONCURRENT} concurrent" in extra.json()["message"]
    assert extra.headers["retry-after"]
    assert elapsed < 5.0
    assert [r.status_code for r in slow] == [200] * MAX_CONCURRENT
    assert all(len(r.json()) == 40 for r in slow)
    assert client.post("/rerank", json={"query": QUERY, "texts": DOCS}).status_code == 200
    assert (
        metric(
            client.get("/metrics").text, "mxbai_rerank_request_failures_total", endpoint="/rerank", kind="overloaded"
        )
        >= 1
    )
