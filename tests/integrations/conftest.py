"""Shared fixtures of the framework integration tests: one live ``mxbai-rerank serve`` process
(tiny v2 model, API key required) for the whole folder, a recording fake server, and data."""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

# Haystack sends usage telemetry from pipeline runs unless told not to: no network in tests.
os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")
sys.path.insert(0, str(Path(__file__).parents[1] / "server"))

from _integration_data import API_KEY
from _server_process import ServerProcess, free_port, start_server


@pytest.fixture(scope="session")
def rerank_server(v2_model_dir: Path) -> Iterator[ServerProcess]:
    """``mxbai-rerank serve`` on the v2 fixture model, started once for every integration test."""
    server = start_server(v2_model_dir, "--api-key", API_KEY)
    yield server
    server.stop()


@pytest.fixture
def dead_url() -> str:
    """A loopback URL where nothing listens."""
    return f"http://127.0.0.1:{free_port()}"


class RecordingServer:
    """A stand-in server for the request side: records each JSON body and answers a Mixedbread
    ranking that reverses the input (or ``reply``, when set)."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.reply: tuple[int, Any] | None = None
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._send(200, {"status": "ok"})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.bodies.append(body)
                outer.headers.append(dict(self.headers))
                if outer.reply is not None:
                    self._send(*outer.reply)
                    return
                n = len(body["input"])
                order = list(range(n))[::-1][: body.get("top_k") or n]
                data = [{"index": i, "score": float(i) / n, "object": "rank_result"} for i in order]
                self._send(200, {"object": "list", "model": "fake", "data": data, "top_k": len(data)})

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def recording_server() -> Iterator[RecordingServer]:
    server = RecordingServer()
    yield server
    server.close()
