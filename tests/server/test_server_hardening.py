"""A real server (tiny v2 model) with small limits and short deadlines, against careless and hostile clients.

Covers: the body and per-text limits (413 before the body is read), slow headers and bodies
(408, never holding a concurrency slot), clients that disconnect (their work dropped, 499 in
the metrics), and a bounded load test that mixes all of them with normal clients.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from _server_process import (
    ServerProcess,
    host_port,
    metric,
    metrics_text,
    peak_rss_bytes,
    read_response,
    request_head,
    start_server,
)

PAYLOAD_LIMIT = 100_000
MAX_TEXT_CHARS = 20_000
HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 2.0
MAX_CONCURRENT = 16
ATOL = 1e-4
QUERY = "Which animal is red and quick?"
SERVER_ARGS = (
    "--payload-limit",
    str(PAYLOAD_LIMIT),
    "--max-text-chars",
    str(MAX_TEXT_CHARS),
    "--header-timeout",
    str(HEADER_TIMEOUT),
    "--body-timeout",
    str(BODY_TIMEOUT),
    "--max-concurrent-requests",
    str(MAX_CONCURRENT),
)
ERROR_KEYS = {"message", "error", "error_type", "param"}


@pytest.fixture(scope="module")
def server(v2_model_dir: Path) -> Iterator[ServerProcess]:
    proc = start_server(v2_model_dir, *SERVER_ARGS)
    yield proc
    proc.stop()


def docs_for(tag: str, n: int) -> list[str]:
    return [f"{tag}: document {i} about a {('red', 'blue', 'quick', 'lazy')[i % 4]} fox and a dog" for i in range(n)]


def check_scores(results: Sequence[dict[str, Any]], reranker: Any, query: str, docs: list[str]) -> None:
    """TEI-shaped ``results`` equal the library's scores for the same pairs."""
    want = {r.index: r.score for r in reranker.rank(query, docs, top_k=len(docs), normalize=True)}
    assert sorted(r["index"] for r in results) == list(range(len(docs)))
    for r in results:
        assert abs(r["score"] - want[r["index"]]) <= ATOL, (r, want[r["index"]])


def error_of(status: int, body: bytes) -> dict[str, Any]:
    payload = json.loads(body)
    assert set(payload) == ERROR_KEYS and payload["message"] == payload["error"], (status, payload)
    return payload


def raw_post(path: str, body: bytes) -> bytes:
    return request_head(path, length=len(body)) + body


async def raw_exchange(base_url: str, data: bytes, *, timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection(*host_port(base_url))
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(read_response(reader), timeout)
    finally:
        writer.close()


async def drip(writer: asyncio.StreamWriter, data: bytes, response: asyncio.Future[Any], delay: float) -> None:
    """Send ``data`` one byte every ``delay`` seconds until the server answers or closes."""
    for byte in data:
        if response.done():
            return
        try:
            writer.write(bytes([byte]))
            await writer.drain()
        except ConnectionError:
            return
        await asyncio.sleep(delay)


# -- item 1: size limits -----------------------------------------------------------------------


def test_bodies_over_the_payload_limit_get_413_before_they_are_read(server: ServerProcess, v2_reranker: Any) -> None:
    async def scenario() -> list[tuple[int, dict[str, str], bytes, float]]:
        out = []
        # A promise of 50 MB and not a byte of it: answered at once, from the headers alone.
        started = time.perf_counter()
        status, headers, body = await raw_exchange(server.base_url, request_head("/rerank", length=50_000_000))
        out.append((status, headers, body, time.perf_counter() - started))
        # Chunked, no length announced: cut off once past the limit.
        reader, writer = await asyncio.open_connection(*host_port(server.base_url))
        # Reading from the start: the server answers and closes while we still send, our next
        # bytes then draw a reset, and a StreamReader read() begun after the reset raises it even
        # with the answer already buffered; a read already waiting returns the answer.
        response = asyncio.ensure_future(read_response(reader))
        writer.write(request_head("/v1/reranking", headers={"Transfer-Encoding": "chunked"}))
        started = time.perf_counter()
        chunk = b'{"query": "q", "input": ["' + b"x" * 40_000
        with_size = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
        try:
            for _ in range(10):  # 400 KB offered, 4x the limit
                if response.done():
                    break
                writer.write(with_size)
                await writer.drain()
        except ConnectionError:
            pass  # the server answered and closed while we were still sending
        status, headers, body = await asyncio.wait_for(response, 30)
        out.append((status, headers, body, time.perf_counter() - started))
        writer.close()
        return out

    for status, headers, body, elapsed in asyncio.run(scenario()):
        assert status == 413, body
        error = error_of(status, body)
        assert error["error_type"] == "validation" and error["param"] is None
        assert "--payload-limit" in error["message"] and str(PAYLOAD_LIMIT) in error["message"]
        assert headers.get("connection") == "close" and elapsed < 5.0

    # A real body just over the limit (httpx sends its length), and one under it.
    big = {"query": QUERY, "texts": ["y" * 10_000] * 10}
    response = httpx.post(f"{server.base_url}/rerank", json=big, timeout=30)
    assert response.status_code == 413 and response.json()["error_type"] == "validation"
    docs = docs_for("under", 4)
    response = httpx.post(f"{server.base_url}/rerank", json={"query": QUERY, "texts": docs}, timeout=30)
    assert response.status_code == 200
    check_scores(response.json(), v2_reranker, QUERY, docs)


def test_a_text_over_the_per_text_limit_gets_413_naming_it(server: ServerProcess) -> None:
    long_text = "z" * (MAX_TEXT_CHARS + 1)
    cases = [
        ("/v1/reranking", {"query": QUERY, "input": ["short", long_text]}, "input[1]"),
        ("/v2/rerank", {"query": long_text, "documents": ["a"]}, "query"),
        ("/v1/reranking", {"query": QUERY, "input": [{"meta": {"body": long_text}}]}, "input[0].meta.body"),
    ]
    for path, body, param in cases:
        response = httpx.post(f"{server.base_url}{path}", json=body, timeout=30)
        assert response.status_code == 413, response.text
        error = response.json()
        assert error["param"] == param and error["error_type"] == "validation"
        assert str(MAX_TEXT_CHARS) in error["message"] and "--max-text-chars" in error["message"]
    at_limit = httpx.post(
        f"{server.base_url}/rerank", json={"query": QUERY, "texts": ["z" * MAX_TEXT_CHARS]}, timeout=30
    )
    assert at_limit.status_code == 200


# -- item 2: slow clients ----------------------------------------------------------------------


def test_slow_uploads_hold_no_slot_and_get_408(server: ServerProcess, v2_reranker: Any) -> None:
    tricklers = MAX_CONCURRENT + 4  # more slow uploads than there are slots
    docs = docs_for("busy", 6)

    async def trickle(index: int) -> tuple[int, bytes, float]:
        reader, writer = await asyncio.open_connection(*host_port(server.base_url))
        body = json.dumps({"query": QUERY, "texts": [f"slow {index}"]}).encode()
        writer.write(request_head("/rerank", length=len(body)) + body[:5])
        started = time.perf_counter()
        response = asyncio.ensure_future(read_response(reader))
        await drip(writer, body[5:], response, 0.25)  # 10x longer than the body deadline
        status, _, payload = await asyncio.wait_for(response, 30)
        writer.close()
        return status, payload, time.perf_counter() - started

    async def slow_headers() -> tuple[int, bytes, float]:
        reader, writer = await asyncio.open_connection(*host_port(server.base_url))
        started = time.perf_counter()
        response = asyncio.ensure_future(read_response(reader))
        await drip(writer, request_head("/rerank", length=2), response, 0.2)
        status, _, payload = await asyncio.wait_for(response, 30)
        writer.close()
        return status, payload, time.perf_counter() - started

    async def scenario() -> tuple[list[tuple[int, bytes, float]], tuple[int, bytes, float], list[httpx.Response]]:
        slow = [asyncio.ensure_future(trickle(i)) for i in range(tricklers)]
        headers = asyncio.ensure_future(slow_headers())
        await asyncio.sleep(0.5)  # every trickler has sent its headers and started its body
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as ac:
            normal = await asyncio.gather(*(ac.post("/rerank", json={"query": QUERY, "texts": docs}) for _ in range(4)))
        return list(await asyncio.gather(*slow)), await headers, list(normal)

    before = metrics_text(server.base_url)
    slow, headers, normal = asyncio.run(scenario())
    after = metrics_text(server.base_url)
    # Other clients were served while the slow ones were uploading: nobody got 429.
    assert [r.status_code for r in normal] == [200] * 4
    for response in normal:
        check_scores(response.json(), v2_reranker, QUERY, docs)
    for status, payload, elapsed in [*slow, headers]:
        assert status == 408, payload
        assert error_of(status, payload)["error_type"] == "timeout"
        assert elapsed < BODY_TIMEOUT + 3.0
    assert "--body-timeout" in json.loads(slow[0][1])["message"]
    assert "--header-timeout" in json.loads(headers[1])["message"]
    assert headers[2] >= HEADER_TIMEOUT - 0.1
    assert all(elapsed >= BODY_TIMEOUT - 0.1 for _, _, elapsed in slow)

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert delta("mxbai_rerank_requests_total", endpoint="/rerank", status="408") == tricklers
    assert delta("mxbai_rerank_requests_total", endpoint="other", status="408") == 1
    assert delta("mxbai_rerank_requests_total", endpoint="/rerank", status="429") == 0
    assert metric(after, "mxbai_rerank_requests_in_flight") == 0


def test_an_idle_connection_is_closed_after_the_header_timeout(server: ServerProcess) -> None:
    async def scenario() -> tuple[bytes, float]:
        reader, writer = await asyncio.open_connection(*host_port(server.base_url))
        started = time.perf_counter()
        data = await asyncio.wait_for(reader.read(), 30)  # EOF: closed without an answer
        writer.close()
        return data, time.perf_counter() - started

    data, elapsed = asyncio.run(scenario())
    assert data == b"" and HEADER_TIMEOUT - 0.1 <= elapsed < HEADER_TIMEOUT + 3.0


# -- item 3: disconnects -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def slow_server(v2_model_dir: Path) -> Iterator[ServerProcess]:
    """The same limits, and forward passes of one pair each, so that a request of 1000 pairs keeps
    the worker busy for seconds even on a fast, quiet machine (the tiny model scores 400 pairs in
    a fraction of a second at the default budget)."""
    proc = start_server(v2_model_dir, *SERVER_ARGS, "--max-batch-tokens", "64")
    yield proc
    proc.stop()


def test_a_client_that_disconnects_leaves_no_work_and_frees_its_slot(
    slow_server: ServerProcess, v2_reranker: Any
) -> None:
    server = slow_server
    quitters = 8
    blocker_docs = docs_for("blocker", 1000)
    quitter_body = [json.dumps({"query": QUERY, "texts": docs_for(f"quit{i}", 8)}).encode() for i in range(quitters)]
    late_docs = docs_for("late", 2)

    async def in_flight() -> float:
        async with httpx.AsyncClient(base_url=server.base_url) as ac:
            return metric((await ac.get("/metrics")).text, "mxbai_rerank_requests_in_flight")

    async def wait_for(predicate: Any, timeout: float) -> float:
        started = time.perf_counter()
        while not predicate(await in_flight()):
            if time.perf_counter() - started > timeout:
                raise AssertionError("timed out waiting for requests_in_flight")
            await asyncio.sleep(0.02)
        return time.perf_counter() - started

    async def scenario() -> tuple[httpx.Response, httpx.Response, float, bool]:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=120) as ac:
            blocker = asyncio.ensure_future(ac.post("/rerank", json={"query": QUERY, "texts": blocker_docs}))
            await wait_for(lambda n: n >= 1, 30)
            await asyncio.sleep(0.3)  # tokenized and being scored: the worker is busy
            writers = []
            for body in quitter_body:
                _, writer = await asyncio.open_connection(*host_port(server.base_url))
                writer.write(request_head("/rerank", length=len(body)) + body)
                writers.append(writer)
            await wait_for(lambda n: n >= 1 + quitters, 30)  # all admitted, queued behind the blocker
            for writer in writers:
                writer.close()
            freed_after = await wait_for(lambda n: n <= 1, 30)
            blocker_still_running = not blocker.done()
            late = await ac.post("/rerank", json={"query": QUERY, "texts": late_docs})
            return await blocker, late, freed_after, blocker_still_running

    before = metrics_text(server.base_url)
    blocker, late, freed_after, blocker_still_running = asyncio.run(scenario())
    after = metrics_text(server.base_url)

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    # The slots were freed while the blocker was still being scored, not after the abandoned work.
    assert blocker_still_running and freed_after < 2.0
    assert blocker.status_code == 200 and late.status_code == 200
    check_scores(late.json(), v2_reranker, QUERY, late_docs)
    assert len(blocker.json()) == len(blocker_docs)
    # Nothing was scored for the clients that left: only the blocker's and the late request's pairs.
    assert delta("mxbai_rerank_batch_pairs_sum") == len(blocker_docs) + len(late_docs)
    assert delta("mxbai_rerank_documents_total") == len(blocker_docs) + len(late_docs)
    assert delta("mxbai_rerank_requests_total", endpoint="/rerank", status="499") == quitters
    assert delta("mxbai_rerank_requests_total", endpoint="/rerank", status="200") == 2
    assert delta("mxbai_rerank_request_failures_total", endpoint="/rerank", kind="cancelled") == quitters
    assert metric(after, "mxbai_rerank_requests_in_flight") == 0
    assert metric(after, "mxbai_rerank_queue_depth") == 0


# -- the load test -----------------------------------------------------------------------------


def test_mixed_load_of_normal_slow_oversized_disconnecting_and_malformed_clients(
    server: ServerProcess, v2_reranker: Any
) -> None:
    """At most 56 connections at once, well under 60 s: 8 normal clients (4 requests each, one
    keep-alive connection), 8 slow bodies, 8 slow headers, 8 oversized, 8 disconnecting and 8
    malformed clients, all started together."""
    normal_clients, per_client, group = 8, 4, 8
    paths = ("/rerank", "/v1/reranking", "/v2/rerank", "/v1/rerank")
    work = [
        [(paths[(c + r) % 4], f"{QUERY} ({c}.{r})", docs_for(f"n{c}.{r}", 3 + (c + r) % 4)) for r in range(per_client)]
        for c in range(normal_clients)
    ]
    malformed = [
        raw_post("/rerank", b'{"query":'),  # truncated JSON
        raw_post("/rerank", b'{"query":"q","texts":["a"],"x":N}'),
        raw_post("/v1/reranking", b'{"query":"q","input":[{"a":NaN}],"top_k":1}'),
        raw_post("/rerank", b"\xff\xfe\xfd\xfc"),
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n",
        raw_post("/rerank", b"[" * 200 + b"]" * 200),  # nested too deeply
        raw_post("/rerank", b'{"query":"\\ud800","texts":["a"]}'),  # a lone surrogate
    ]

    def body_of(path: str, query: str, docs: list[str]) -> dict[str, Any]:
        key = {"/rerank": "texts", "/v1/reranking": "input"}.get(path, "documents")
        return {"query": query, key: docs}

    def pairs_of(path: str, data: Any) -> list[dict[str, Any]]:
        if path == "/rerank":
            return list(data)
        if path == "/v1/reranking":
            return [{"index": d["index"], "score": d["score"]} for d in data["data"]]
        return [{"index": d["index"], "score": d["relevance_score"]} for d in data["results"]]

    async def normal(jobs: list[tuple[str, str, list[str]]]) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as ac:
            return [await ac.post(path, json=body_of(path, query, docs)) for path, query, docs in jobs]

    async def slow_body(index: int) -> int:
        reader, writer = await asyncio.open_connection(*host_port(server.base_url))
        writer.write(request_head("/rerank", length=200) + b'{"query": "slow')
        status, _, _ = await asyncio.wait_for(read_response(reader), 30)  # sends nothing more
        writer.close()
        return status

    async def slow_header(index: int) -> int:
        reader, writer = await asyncio.open_connection(*host_port(server.base_url))
        writer.write(b"POST /rerank HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        status, _, _ = await asyncio.wait_for(read_response(reader), 30)
        writer.close()
        return status

    async def oversized(index: int) -> int:
        reader, writer = await asyncio.open_connection(*host_port(server.base_url))
        if index % 2:  # announced: refused from the headers
            writer.write(request_head("/rerank", length=5_000_000))
        else:  # chunked: refused once past the limit; tries to send 5 MB
            writer.write(request_head("/v2/rerank", headers={"Transfer-Encoding": "chunked"}))
            chunk = b"a" * 65536
            framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
            try:
                for _ in range(80):
                    writer.write(framed)
                    await writer.drain()
            except ConnectionError:
                pass
        try:
            status, _, _ = await asyncio.wait_for(read_response(reader), 30)
        except ConnectionResetError:
            # The server answered 413 and closed without reading the rest of the body; the
            # kernel may then reset the connection before the client reads the answer.
            status = -413
        writer.close()
        return status

    async def disconnecting(index: int) -> None:
        body = json.dumps({"query": QUERY, "documents": docs_for(f"gone{index}", 30)}).encode()
        _, writer = await asyncio.open_connection(*host_port(server.base_url))
        writer.write(request_head("/v2/rerank", length=len(body)) + body)
        await writer.drain()
        writer.close()

    async def bad(data: bytes) -> tuple[int, bytes]:
        status, _, payload = await raw_exchange(server.base_url, data)
        return status, payload

    async def scenario() -> tuple[Any, ...]:
        started = time.perf_counter()
        tasks = (
            asyncio.gather(*(normal(jobs) for jobs in work)),
            asyncio.gather(*(slow_body(i) for i in range(group))),
            asyncio.gather(*(slow_header(i) for i in range(group))),
            asyncio.gather(*(oversized(i) for i in range(group))),
            asyncio.gather(*(disconnecting(i) for i in range(group))),
            asyncio.gather(*(bad(data) for data in malformed)),
        )
        results = await asyncio.gather(*tasks)
        return (*results, time.perf_counter() - started)

    async def warm_up() -> None:
        await asyncio.gather(*(normal(jobs) for jobs in work))

    # The normal work once alone first: the peak memory of normal serving is the baseline.
    asyncio.run(warm_up())
    before = metrics_text(server.base_url)
    rss_before = peak_rss_bytes(server.proc.pid)
    normal_out, slow_bodies, slow_headers, oversized_out, _, bad_out, elapsed = asyncio.run(scenario())
    # Every slow client's slot-free deadline has passed; the disconnects have been noticed.
    deadline = time.monotonic() + 10
    while metric(metrics_text(server.base_url), "mxbai_rerank_requests_in_flight") > 0:
        assert time.monotonic() < deadline, "a request is still in flight after every client finished"
        time.sleep(0.05)
    after = metrics_text(server.base_url)
    rss_after = peak_rss_bytes(server.proc.pid)

    assert elapsed < 60
    for jobs, responses in zip(work, normal_out, strict=True):
        for (path, query, docs), response in zip(jobs, responses, strict=True):
            assert response.status_code == 200, (path, response.text)
            check_scores(pairs_of(path, response.json()), v2_reranker, query, docs)
    assert slow_bodies == [408] * group and slow_headers == [408] * group
    assert all(status in (413, -413) for status in oversized_out), oversized_out
    for status, payload in bad_out:
        assert status == 400, payload
        assert error_of(status, payload)["error_type"] == "validation"

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    sent = normal_clients * per_client
    assert sum(delta("mxbai_rerank_requests_total", endpoint=p, status="200") for p in paths) == sent
    assert sum(delta("mxbai_rerank_requests_total", endpoint=p, status="429") for p in paths) == 0
    assert delta("mxbai_rerank_requests_total", endpoint="/rerank", status="408") == group
    assert delta("mxbai_rerank_requests_total", endpoint="other", status="408") == group
    assert delta("mxbai_rerank_requests_total", endpoint="/rerank", status="413") == group // 2
    assert delta("mxbai_rerank_requests_total", endpoint="/v2/rerank", status="413") == group // 2
    assert delta("mxbai_rerank_requests_total", endpoint="/v2/rerank", status="499") == group
    assert delta("mxbai_rerank_request_failures_total", endpoint="/v2/rerank", kind="cancelled") == group
    total_400 = sum(
        delta("mxbai_rerank_requests_total", endpoint=p, status="400") for p in ("/rerank", "/v1/reranking", "other")
    )
    assert total_400 == len(malformed)
    assert delta("mxbai_rerank_documents_total") == sum(len(d) for jobs in work for _, _, d in jobs)
    assert metric(after, "mxbai_rerank_queue_depth") == 0
    # Memory: the oversized clients offered 20 MB; the server held at most its limits of it.
    assert rss_after - rss_before < 64 * 2**20, (rss_before, rss_after)
    assert httpx.get(f"{server.base_url}/health").json() == {"status": "ok"}
