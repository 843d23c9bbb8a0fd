"""Load-test ``mxbai-rerank serve`` against sequential library calls on the same work.

Starts the server on a loopback port, runs ``--clients`` concurrent asyncio + httpx clients
over ``--requests`` requests of ``--docs-per-request`` documents (``POST /v1/reranking``),
stops it, then does the same requests one at a time with ``reranker.rank`` in this process.
Both phases are bounded by ``--requests`` and ``--time-limit``. Prints a Markdown table and
writes ``benchmarks/results/server.json``.

    .venv/bin/python benchmarks/bench_server.py --model mixedbread-ai/mxbai-rerank-base-v2 --device cuda
    .venv/bin/python benchmarks/bench_server.py --build-tiny --requests 40 --clients 8   # smoke run
    .venv/bin/python benchmarks/bench_server.py --shape base    # random-weight Qwen2-0.5B shape, bf16

Without ``--model`` the checkpoint is ``_common.benchmark_checkpoint`` (the same one as
bench_core.py and bench_ray.py; ``tiny`` is the deterministic test fixture).

The server batches requests from all clients into shared forward passes, so with enough
clients it should serve at least the library's sequential throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import benchmark_checkpoint  # noqa: E402

_WORD_TEXT = (
    "river mountain engine protein market history quantum garden language network theory city music "
    "ocean battery climate museum library planet software vaccine harbor forest election recipe bridge "
    "satellite medicine painting railway volcano economy galaxy algorithm festival desert glacier"
)
_WORDS = _WORD_TEXT.split()


def make_workload(requests: int, docs_per_request: int, seed: int = 0) -> list[tuple[str, list[str]]]:
    """Deterministic queries and documents of mixed length (about 10 to 90 words)."""
    rng = random.Random(seed)
    out = []
    for r in range(requests):
        query = f"what is known about the {rng.choice(_WORDS)} and the {rng.choice(_WORDS)}? ({r})"
        docs = [
            " ".join(rng.choice(_WORDS) for _ in range(rng.randint(10, 90))).capitalize() + "."
            for _ in range(docs_per_request)
        ]
        out.append((query, docs))
    return out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _percentiles(latencies: list[float]) -> dict[str, float]:
    import numpy as np

    if not latencies:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "p99_ms": float("nan")}
    p50, p95, p99 = np.percentile(np.asarray(latencies) * 1000.0, [50, 95, 99])
    return {"p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99)}


def _summary(done: int, docs: int, seconds: float, latencies: list[float], errors: int, **extra: Any) -> dict[str, Any]:
    return {
        "requests": done,
        "errors": errors,
        "seconds": seconds,
        "requests_per_s": done / seconds if seconds > 0 else 0.0,
        "documents_per_s": docs / seconds if seconds > 0 else 0.0,
        **_percentiles(latencies),
        **extra,
    }


def _metric(text: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if not line.startswith("#") and line.split("{")[0].split(" ")[0] == name
    )


class _Server:
    def __init__(self, args: argparse.Namespace, model: Path | str) -> None:
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log = Path(tempfile.mkstemp(prefix="bench-serve-", suffix=".log")[1])
        cli = Path(sys.executable).parent / "mxbai-rerank"
        cmd = [
            str(cli),
            "serve",
            "--model",
            str(model),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dtype",
            args.dtype,
            "--max-concurrent-requests",
            str(max(512, args.clients * 2)),
            "--max-client-batch-size",
            str(max(1000, args.docs_per_request)),
            "--log-level",
            "warning",
        ]
        if args.device:
            cmd += ["--device", args.device]
        if args.family:
            cmd += ["--family", args.family]
        if args.max_batch_tokens:
            cmd += ["--max-batch-tokens", str(args.max_batch_tokens)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MXBAI_RERANK_")}
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)

    def wait_healthy(self, timeout: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.base_url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        text = self.log.read_text()
        self.stop()
        raise RuntimeError(f"server not healthy after {timeout}s:\n{text}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.unlink(missing_ok=True)


async def _load(
    base_url: str, workload: list[tuple[str, list[str]]], clients: int, time_limit: float
) -> tuple[dict[str, Any], list[list[tuple[int, float]]]]:
    import httpx

    latencies: list[float] = []
    results: list[list[tuple[int, float]]] = [[] for _ in workload]
    errors = 0
    done = 0
    done_docs = 0
    next_index = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async with httpx.AsyncClient(base_url=base_url, timeout=300, limits=limits) as ac:
        # Warm-up outside the measurement: connections and first-call costs.
        await asyncio.gather(*(ac.post("/v1/reranking", json={"query": q, "input": d}) for q, d in workload[:clients]))
        before = (await ac.get("/metrics")).text
        started = time.perf_counter()
        deadline = started + time_limit

        async def client() -> None:
            nonlocal errors, done, done_docs, next_index
            while next_index < len(workload) and time.perf_counter() < deadline:
                i = next_index
                next_index += 1
                query, docs = workload[i]
                t0 = time.perf_counter()
                try:
                    response = await ac.post("/v1/reranking", json={"query": query, "input": docs})
                except httpx.HTTPError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - t0)
                if response.status_code != 200:
                    errors += 1
                    continue
                done += 1
                done_docs += len(docs)
                results[i] = [(d["index"], d["score"]) for d in response.json()["data"]]

        await asyncio.gather(*(client() for _ in range(clients)))
        seconds = time.perf_counter() - started
        after = (await ac.get("/metrics")).text

    batches = _metric(after, "mxbai_rerank_batches_total") - _metric(before, "mxbai_rerank_batches_total")
    summary = _summary(
        done,
        done_docs,
        seconds,
        latencies,
        errors,
        clients=clients,
        scoring_calls=int(batches),
        requests_per_scoring_call=done / batches if batches else 0.0,
    )
    return summary, results


def _library(args: argparse.Namespace, model: Path | str, workload: list[tuple[str, list[str]]]) -> tuple[dict, list]:
    import mxbai_rerank

    kwargs: dict[str, Any] = {"device": args.device, "torch_dtype": args.dtype, "family": args.family}
    if args.max_batch_tokens:
        kwargs["max_batch_tokens"] = args.max_batch_tokens
    reranker = mxbai_rerank.load(str(model), **kwargs)
    for query, docs in workload[:2]:  # warm-up
        reranker.rank(query, docs, top_k=len(docs), normalize=True)
    latencies: list[float] = []
    results: list[list[tuple[int, float]]] = []
    done_docs = 0
    started = time.perf_counter()
    for query, docs in workload:
        if time.perf_counter() - started > args.time_limit:
            break
        t0 = time.perf_counter()
        ranked = reranker.rank(query, docs, top_k=len(docs), normalize=True)
        latencies.append(time.perf_counter() - t0)
        done_docs += len(docs)
        results.append([(r.index, r.score) for r in ranked])
    seconds = time.perf_counter() - started
    info = {"family": reranker.family, "device": str(reranker.device), "dtype": str(reranker.dtype)}
    return _summary(len(latencies), done_docs, seconds, latencies, 0, **info), results


def _max_score_diff(server: list[list[tuple[int, float]]], library: list[list[tuple[int, float]]]) -> float | None:
    diffs = []
    for got, want in zip(server, library, strict=False):
        if got and want:
            by_index = dict(want)
            diffs.extend(abs(score - by_index[index]) for index, score in got)
    return max(diffs) if diffs else None


def _markdown(server: dict[str, Any], library: dict[str, Any]) -> str:
    rows = [
        ("server", f"{server['clients']} concurrent clients", server),
        ("library", "sequential `reranker.rank`", library),
    ]
    lines = [
        "| | work | requests/s | documents/s | p50 ms | p95 ms | p99 ms | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, how, r in rows:
        lines.append(
            f"| {name} | {how} | {r['requests_per_s']:.2f} | {r['documents_per_s']:.1f} | {r['p50_ms']:.1f} | "
            f"{r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="Hub name or local directory (default: build a fixture model, see --shape).")
    parser.add_argument("--build-tiny", action="store_true", help="Same as --shape tiny.")
    parser.add_argument(
        "--shape", choices=["tiny", "base"], default="base", help="Fixture model to build if no --model."
    )
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--docs-per-request", type=int, default=20)
    parser.add_argument("--device", default=None, help="cpu, cuda... (default: best available)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--max-batch-tokens", type=int, default=None)
    parser.add_argument("--family", default=None, help="force the model family (a checkpoint without the "
                        "'mxbai_rerank' config marker, e.g. the GPU kit's random-weight models: mxbai-v2)")  # fmt: skip
    parser.add_argument("--time-limit", type=float, default=300.0, help="Seconds per phase at most.")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "server.json")
    args = parser.parse_args(argv)
    if min(args.clients, args.requests, args.docs_per_request) < 1:
        parser.error("--clients, --requests and --docs-per-request must be positive")

    model: Path | str = args.model or benchmark_checkpoint("tiny" if args.build_tiny else args.shape)
    workload = make_workload(args.requests, args.docs_per_request)

    server = _Server(args, model)
    try:
        server.wait_healthy(timeout=600)
        served, server_results = asyncio.run(_load(server.base_url, workload, args.clients, args.time_limit))
    finally:
        server.stop()
    library, library_results = _library(args, model, workload)

    speedup = served["requests_per_s"] / library["requests_per_s"] if library["requests_per_s"] else None
    report = {
        "model": str(model),
        "workload": {
            "requests": args.requests,
            "docs_per_request": args.docs_per_request,
            "clients": args.clients,
            "time_limit_s": args.time_limit,
            "max_batch_tokens": args.max_batch_tokens,
        },
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "server": served,
        "library_sequential": library,
        "server_over_library_throughput": speedup,
        "max_abs_score_diff": _max_score_diff(server_results, library_results),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")

    table = _markdown(served, library)
    sys.stdout.write(
        f"model: {model} ({library['family']}, {library['device']}, {library['dtype']})\n\n{table}\n\n"
        f"server / library throughput: {speedup or 0.0:.2f}x; "
        f"{served['requests_per_scoring_call']:.1f} requests per scoring call; "
        f"max |score diff| = {report['max_abs_score_diff']}\nwrote {args.output}\n"
    )
    return 1 if served["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
