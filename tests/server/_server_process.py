"""Start ``mxbai-rerank serve`` as a real subprocess on a free loopback port, for tests."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cli() -> str:
    local = Path(sys.executable).parent / "mxbai-rerank"
    return str(local) if local.exists() else (shutil.which("mxbai-rerank") or "mxbai-rerank")


class ServerProcess:
    """A running server; ``stop()`` (SIGTERM, then SIGKILL) is idempotent."""

    def __init__(self, proc: subprocess.Popen[bytes], base_url: str, log_path: Path) -> None:
        self.proc = proc
        self.base_url = base_url
        self.log_path = log_path
        self._final_log: str | None = None

    def log(self) -> str:
        if self._final_log is not None:
            return self._final_log
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._final_log is None:
            self._final_log = self.log()
            self.log_path.unlink(missing_ok=True)
        return int(self.proc.returncode)


def start_server(
    model_dir: Path | str, *args: str, env: dict[str, str] | None = None, timeout: float = 180.0
) -> ServerProcess:
    """Start the server and wait until ``/health`` answers 200 (or fail with its log)."""
    port = free_port()
    log_path = Path(tempfile.mkstemp(prefix="mxbai-serve-", suffix=".log")[1])
    cmd = [_cli(), "serve", "--model", str(model_dir), "--port", str(port), "--device", "cpu", "--dtype", "float32"]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MXBAI_RERANK_")}
    full_env.update(env or {})
    with log_path.open("wb") as log:
        proc = subprocess.Popen([*cmd, *args], stdout=log, stderr=subprocess.STDOUT, env=full_env)
    server = ServerProcess(proc, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.base_url}/health", timeout=2.0).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"server not healthy after {timeout}s:\n{server.log()}")


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text output (0.0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        key, value = line.rsplit(" ", 1)
        sample, _, label_text = key.partition("{")
        if sample != name:
            continue
        got = ",".join(sorted(label_text.rstrip("}").split(","))) if label_text else ""
        if not labels or got == want:
            total += float(value)
    return total


async def wait_in_flight(base_url: str, count: int, timeout: float = 60.0) -> None:
    """Wait until the server reports ``count`` rerank requests in flight."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=base_url) as ac:
        while time.monotonic() < deadline:
            if metric((await ac.get("/metrics")).text, "mxbai_rerank_requests_in_flight") >= count:
                return
            await asyncio.sleep(0.02)
    raise AssertionError(f"never saw {count} requests in flight")


def slow_docs(n: int, tag: str) -> list[str]:
    """``n`` distinct documents of about 15 tokens each."""
    return [f"{tag} document {i} about a quick red fox and other animals in the forest" for i in range(n)]


# -- raw HTTP, for clients no HTTP library would be (slow, truncated, malformed) --------------


def host_port(base_url: str) -> tuple[str, int]:
    host, port = base_url.removeprefix("http://").split(":")
    return host, int(port)


def request_head(path: str, *, length: int | None = None, headers: dict[str, str] | None = None) -> bytes:
    """A POST request's head (status line and headers) for raw sockets."""
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """(status, lower-cased headers, body) of one response; status 0 if the server closed first."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = await reader.read(65536)
        if not chunk:
            return 0, {}, head
        head += chunk
    head, _, body = head.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = await reader.read(65536)
        if not chunk:
            break
        body += chunk
    return int(status_line.split()[1]), headers, body


def peak_rss_bytes(pid: int) -> int:
    """The process's peak resident set size so far (Linux ``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/<pid>/status")


def metrics_text(base_url: str) -> str:
    return httpx.get(f"{base_url}/metrics", timeout=10).text
