"""A model that is not a local directory: the command says where it loads from, and fails fast
and in one line when the hub cannot be reached (issue 8, item 12). No network is used: the hub
endpoint points at a closed local port, or at a local server that knows no model."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from huggingface_hub import constants

from mxbai_rerank.cli import main

HUB_ID = "mixedbread-ai/mxbai-rerank-base-v2"
QUERY = "How do I read a file line by line in Python?"
DOCS = ["Iterate over the file object to get one line at a time.", "The Eiffel Tower is in Paris."]


def invoke(args: list[str]) -> Result:
    result = CliRunner().invoke(main, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    return result


def stderr_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def point_hub_at(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    """What ``HF_ENDPOINT=endpoint`` does when set before the hub client is imported."""
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    path = tmp_path / "docs.txt"
    path.write_text("\n".join(DOCS) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty hub cache, online mode; returns the cache directory."""
    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    return cache


@pytest.fixture
def not_found_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A reachable hub endpoint that answers 404 (repository not found) to everything."""

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            body = b'{"error": "Repository not found"}'
            self.send_response(404)
            self.send_header("X-Error-Code", "RepoNotFound")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command == "GET":
                self.wfile.write(body)

        do_GET = do_HEAD

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    point_hub_at(monkeypatch, endpoint)
    yield endpoint
    server.shutdown()
    server.server_close()


def cache_model(cache: Path, repo_id: str, model_dir: Path) -> None:
    """Lay ``model_dir`` out in the hub cache as ``repo_id`` at revision main."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(model_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit, encoding="utf-8")


def test_unreachable_hub_fails_fast_in_one_line(
    hub: Path, docs: Path, v2_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    point_hub_at(monkeypatch, endpoint)
    started = time.monotonic()
    result = invoke(["rank", "-m", HUB_ID, "-q", QUERY, str(docs)])
    elapsed = time.monotonic() - started
    assert result.exit_code == 1
    (line,) = stderr_lines(result)
    assert line.startswith(f"Error: cannot download '{HUB_ID}': the Hugging Face hub ({endpoint}) is unreachable")
    assert "local model directory" in line
    # The hub client's retries take half a minute; the check takes one refused connection.
    assert elapsed < 10, elapsed


def test_unreachable_hub_uses_the_cache(
    hub: Path, docs: Path, v2_model_dir: Path, v2_reranker, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache_model(hub, "someone/cached-reranker", v2_model_dir)
    point_hub_at(monkeypatch, f"http://127.0.0.1:{closed_port()}")
    result = invoke(["rank", "-m", "someone/cached-reranker", "--device", "cpu", "--dtype", "float32",
                     "-q", QUERY, "--format", "json", str(docs)])  # fmt: skip
    assert result.exit_code == 0, result.output
    (line,) = stderr_lines(result)
    assert "unreachable" in line and "loading someone/cached-reranker from the Hugging Face cache" in line
    rows = json.loads(result.stdout)
    expected = v2_reranker.rank(QUERY, DOCS)
    assert [row["score"] for row in rows] == pytest.approx([r.score for r in expected], abs=1e-4)
    assert constants.HF_HUB_OFFLINE is False  # offline only while loading


def test_reachable_hub_says_what_it_is_doing(hub: Path, docs: Path, not_found_hub: str) -> None:
    result = invoke(["rank", "-m", "someone/no-such-reranker", "-q", QUERY, str(docs)])
    assert result.exit_code == 1
    announce, error = stderr_lines(result)
    assert announce.startswith(f"loading someone/no-such-reranker from the Hugging Face hub ({not_found_hub})")
    assert error.startswith("Error: ") and "someone/no-such-reranker" in error


def test_offline_mode_fails_fast_in_one_line(tmp_path: Path, docs: Path) -> None:
    """The real entry point, as a new user without a network would run the README's first command."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home")}
    env.pop("HF_HUB_CACHE", None)
    exe = Path(sys.executable).parent / "mxbai-rerank"
    started = time.monotonic()
    done = subprocess.run(
        [str(exe), "rank", "--model", HUB_ID, "--query", QUERY, str(docs)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), done.stderr
    assert HUB_ID in lines[0] and "HF_HUB_OFFLINE" in lines[0] and "local model directory" in lines[0]
    # Python, torch and transformers start in a few seconds; the hub's retries would take 30 s.
    assert elapsed < 25, elapsed
