"""SIGTERM: a real v1 server finishes the requests it accepted, refuses new work, and exits on time.

Uses the same slow settings as ``test_server_v1`` (one pair per forward pass) so that the
requests are still in flight when the signal arrives.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from _server_process import host_port, read_response, request_head, slow_docs, start_server, wait_in_flight

from mxbai_rerank import MxbaiRerankV1

MAX_LENGTH = 40
IN_FLIGHT = 3
# One pair per forward pass, so each request stays in flight long enough to be caught.
SERVER_ARGS = ("--max-length", str(MAX_LENGTH), "--max-batch-tokens", "64")
QUERY = "Which animal is red and quick?"
ATOL = 1e-4


def test_sigterm_answers_every_request_in_flight(v1_model_dir: Path) -> None:
    library = MxbaiRerankV1(str(v1_model_dir), device="cpu", torch_dtype=torch.float32, max_length=MAX_LENGTH)
    proc = start_server(v1_model_dir, *SERVER_ARGS, "--graceful-shutdown-timeout", "300")
    try:
        docs = [slow_docs(40, f"t{i}") for i in range(IN_FLIGHT)]

        async def scenario() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=proc.base_url, timeout=120) as ac:
                tasks = [
                    asyncio.create_task(ac.post("/v2/rerank", json={"query": QUERY, "documents": d})) for d in docs
                ]
                await wait_in_flight(proc.base_url, IN_FLIGHT)
                proc.proc.send_signal(signal.SIGTERM)
                return list(await asyncio.gather(*tasks))

        responses = asyncio.run(scenario())
        # uvicorn re-raises the captured SIGTERM after its graceful shutdown.
        assert proc.proc.wait(60) in (0, -signal.SIGTERM)
    finally:
        proc.stop()
    assert [r.status_code for r in responses] == [200] * IN_FLIGHT
    for response, d in zip(responses, docs, strict=True):
        results = response.json()["results"]
        assert sorted(r["index"] for r in results) == list(range(len(d)))
        expected = library.rank(QUERY, d[:5], top_k=5, sort=False)
        got = {r["index"]: r["relevance_score"] for r in results}
        for r in expected:
            assert abs(got[r.index] - r.score) <= ATOL
    assert "Application shutdown complete" in proc.log() and "Finished server process" in proc.log()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{proc.base_url}/health", timeout=2)


GRACE = 3.0


def test_sigterm_refuses_new_work_and_ends_stalled_requests_at_the_deadline(v1_model_dir: Path) -> None:
    """After SIGTERM: a body completed later gets 503 at once, new connections are refused, and
    after --graceful-shutdown-timeout a stalled upload and a request still being scored get 503."""
    proc = start_server(v1_model_dir, *SERVER_ARGS, "--graceful-shutdown-timeout", str(GRACE), "--body-timeout", "120")
    host, port = host_port(proc.base_url)
    late_body = json.dumps({"query": QUERY, "texts": ["a late document"]}).encode()

    async def scenario() -> tuple[Any, ...]:
        async with httpx.AsyncClient(base_url=proc.base_url, timeout=120) as ac:
            # Several times more queued work than the grace period can score (11,520 pairs, two
            # per forward pass: ~14 s on a fast 2-core CPU, against GRACE = 3 s), in requests
            # small enough that the one being scored at the deadline ends soon after.
            long = [
                asyncio.ensure_future(ac.post("/rerank", json={"query": QUERY, "texts": slow_docs(480, f"long{i}")}))
                for i in range(24)
            ]
            await wait_in_flight(proc.base_url, len(long))
            stalled_reader, stalled = await asyncio.open_connection(host, port)
            stalled.write(request_head("/rerank", length=100) + b'{"query": ')
            late_reader, late = await asyncio.open_connection(host, port)
            late.write(request_head("/rerank", length=len(late_body)) + late_body[:10])
            await asyncio.gather(stalled.drain(), late.drain())
            await asyncio.sleep(0.3)
            proc.proc.send_signal(signal.SIGTERM)
            signalled = time.perf_counter()
            await asyncio.sleep(0.5)
            late.write(late_body[10:])  # completes its body while the server drains
            late_answer = await asyncio.wait_for(read_response(late_reader), 30)
            late_after = time.perf_counter() - signalled
            try:
                await asyncio.open_connection(host, port)
                refused = False
            except OSError:
                refused = True
            stalled_answer = await asyncio.wait_for(read_response(stalled_reader), 60)
            stalled_after = time.perf_counter() - signalled
            long_answers = []
            for request in long:
                answer = await request
                long_answers.append((answer, time.perf_counter() - signalled))
            exit_code = await asyncio.to_thread(proc.proc.wait, 60)
            exited_after = time.perf_counter() - signalled
            for writer in (stalled, late):
                writer.close()
        return (
            late_answer,
            late_after,
            refused,
            stalled_answer,
            stalled_after,
            long_answers,
            exit_code,
            exited_after,
        )

    try:
        late, late_after, refused, stalled, stalled_after, long, exit_code, exited_after = asyncio.run(scenario())
    finally:
        proc.stop()
    # New work while draining: 503 at once, not scored.
    assert late[0] == 503 and late_after < GRACE, late
    assert json.loads(late[2])["error_type"] == "unhealthy" and late[1]["connection"] == "close"
    assert refused
    # At the deadline: the stalled upload and the unfinished requests get 503, and the process exits.
    cut_off = [(r, after) for r, after in long if r.status_code != 200]
    assert cut_off, "every request finished within the grace period: make the work longer"
    answers = [(stalled[0], stalled[2], stalled_after)] + [(r.status_code, r.content, a) for r, a in cut_off]
    for status, body, after in answers:
        assert status == 503, body
        payload = json.loads(body)
        assert set(payload) == {"message", "error", "error_type", "param"} and payload["error_type"] == "unhealthy"
        assert GRACE - 0.5 <= after < GRACE + 5
    assert "--graceful-shutdown-timeout" in cut_off[0][0].json()["message"]
    assert exit_code in (0, -signal.SIGTERM) and exited_after < GRACE + 15
    assert "Application shutdown complete" in proc.log()
