"""SIGTERM: a real v1 server finishes every request it accepted, then exits.

Uses the same slow settings as ``test_server_v1`` (one pair per forward pass) so that the
requests are still in flight when the signal arrives.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
import pytest
import torch
from _server_process import slow_docs, start_server, wait_in_flight

from mxbai_rerank import MxbaiRerankV1

MAX_LENGTH = 40
IN_FLIGHT = 3
# One pair per forward pass, so each request stays in flight long enough to be caught.
SERVER_ARGS = ("--max-length", str(MAX_LENGTH), "--max-batch-tokens", "64")
QUERY = "Which animal is red and quick?"
ATOL = 1e-4


def test_sigterm_answers_every_request_in_flight(v1_model_dir: Path) -> None:
    library = MxbaiRerankV1(str(v1_model_dir), device="cpu", torch_dtype=torch.float32, max_length=MAX_LENGTH)
    proc = start_server(v1_model_dir, *SERVER_ARGS)
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
