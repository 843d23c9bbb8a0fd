"""``mxbai-rerank bench``: documents/s, tokens/s, latency and memory of a model, over a grid of settings."""

from __future__ import annotations

import gc
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import click

from ._common import (
    DTYPE_CHOICES,
    CliUsageError,
    OneLineErrorCommand,
    handle_errors,
    input_format_option,
    load_model_or_exit,
    model_options,
    parse_list,
    read_documents,
)

__all__ = ["bench", "format_results"]

_EPILOG = """\b
Examples:
  mxbai-rerank bench -m mixedbread-ai/mxbai-rerank-base-v2 --queries 32 --docs-per-query 100
  mxbai-rerank bench -m ./model --device cuda --dtype float32,bfloat16 --max-batch-tokens 16384,65536 --json bench.json
  mxbai-rerank bench -m ./model --documents my_docs.jsonl --queries 8 --docs-per-query 50
  mxbai-rerank bench -m ./model --documents notes.txt --input-format text --queries 4

\b
Without --documents, queries and documents are English sentences from Python standard-library
docstrings, documents of mixed length (1 to 40 sentences). Each query's documents are scored
in one call; latency is per query. Every combination of --dtype and --max-batch-tokens is
measured (the model is loaded once per dtype). Peak RSS is sampled during the timed loop
(psutil); max RSS is the process's lifetime peak; GPU peak is torch.cuda.max_memory_allocated."""


def _dtype(value: str) -> str:
    if value not in DTYPE_CHOICES:
        raise ValueError(f"{value!r} is not one of {', '.join(DTYPE_CHOICES)}")
    return value


def _positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError(f"{number} is not positive")
    return number


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def format_results(results: list[dict[str, Any]]) -> str:
    """One row per measured setting."""
    header = (
        f"{'dtype':<9}{'budget':>8}{'docs/s':>10}{'tokens/s':>11}{'p50 ms':>9}{'p95 ms':>9}"
        f"{'peak RSS MB':>13}{'GPU peak MB':>13}"
    )
    rows = [header]
    for r in results:
        rows.append(
            f"{r['dtype']:<9}{r['max_batch_tokens']:>8}{r['documents_per_s']:>10.1f}{r['tokens_per_s']:>11.0f}"
            f"{r['latency_ms_p50']:>9.1f}{r['latency_ms_p95']:>9.1f}{_mb(r['peak_rss_mb']):>13}"
            f"{_mb(r['gpu_peak_allocated_mb']):>13}"
        )
    return "\n".join(rows)


def _environment() -> dict[str, Any]:
    import torch
    import transformers

    from .. import __version__

    env: dict[str, Any] = {
        "mxbai_rerank": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
    return env


@click.command("bench", cls=OneLineErrorCommand, epilog=_EPILOG)
@model_options(dtype=False, max_batch_tokens=False, family=True, backend=True)
@click.option(
    "--dtype",
    "dtypes",
    default="auto",
    show_default=True,
    metavar="LIST",
    help=f"Comma-separated dtypes to measure, each one of {', '.join(DTYPE_CHOICES)}.",
)
@click.option(
    "--max-batch-tokens",
    "budgets",
    default=None,
    metavar="LIST",
    help="Comma-separated token budgets (padded tokens per forward pass) to measure "
    "[default: the model's: 8192 on CPU, 16384 on MPS, 65536 on CUDA].",
)
@click.option(
    "--queries",
    "num_queries",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="Timed queries per setting.",
)
@click.option(
    "--docs-per-query",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Documents scored for each query (in one call).",
)
@click.option(
    "--documents",
    type=str,
    default=None,
    metavar="FILE",
    help="Draw documents from FILE (text or JSON lines, see --input-format) instead of generating them.",
)
@input_format_option
@click.option("--instruction", default=None, help="v2 models: an instruction prepended to each query.")
@click.option(
    "--warmup", type=click.IntRange(min=0), default=1, show_default=True, help="Untimed queries run first per setting."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the workload (queries and documents).")
@click.option(
    "--json",
    "json_out",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="OUT",
    help="Also write the results, workload and environment (versions, CPU, GPU) as JSON to the file OUT.",
)
@handle_errors
def bench(
    model: str,
    device: str,
    max_length: int | None,
    family: str,
    backend: str | None,
    dtypes: str,
    budgets: str | None,
    num_queries: int,
    docs_per_query: int,
    documents: str | None,
    input_format: str,
    instruction: str | None,
    warmup: int,
    seed: int,
    json_out: str | None,
) -> None:
    """Measure documents/s, tokens/s, latency per query (p50/p95) and peak memory of a model."""
    from .._documents import document_text
    from ..evaluation import benchmark, generate_workload, workload_from_documents

    dtype_list = parse_list(dtypes, _dtype, "--dtype")
    budget_list: list[int | None] = list(parse_list(budgets, _positive_int, "--max-batch-tokens")) or [None]
    if json_out is not None and not Path(json_out).parent.is_dir():
        raise CliUsageError(f"--json {json_out!r}: directory {str(Path(json_out).parent)!r} does not exist")
    if documents is None and input_format != "auto":
        raise CliUsageError("--input-format applies to --documents FILE, and no --documents is given")
    if documents is not None:
        pool = [document_text(doc.value, None) for doc in read_documents(documents, input_format)]
        workload = workload_from_documents(pool, num_queries, docs_per_query, seed=seed)
        source = documents
    else:
        workload = generate_workload(num_queries, docs_per_query, seed=seed)
        source = "generated (Python standard-library docstrings)"

    results: list[dict[str, Any]] = []
    header_shown = False
    for dtype in dtype_list:
        started = time.perf_counter()
        reranker = load_model_or_exit(
            model, device=device, dtype=dtype, max_length=max_length, family=family, backend=backend
        )
        load_s = time.perf_counter() - started
        if not header_shown:
            info = reranker.info()
            click.echo(
                f"model {model} ({info.family}) on {info.device}; {num_queries} queries x "
                f"{docs_per_query} documents, {source}",
                err=True,
            )
            header_shown = True
        for budget in budget_list:
            result = benchmark(
                reranker, workload, max_batch_tokens=budget, instruction=instruction, warmup=warmup, load_s=load_s
            )
            results.append(result.to_dict())
        del reranker
        gc.collect()
        _empty_cuda_cache()

    click.echo(format_results(results))
    if json_out is not None:
        report = {
            "model": model,
            "workload": {
                "queries": num_queries,
                "docs_per_query": docs_per_query,
                "source": source,
                "seed": seed,
                "instruction": instruction,
                "warmup": warmup,
            },
            "environment": _environment(),
            "results": results,
        }
        Path(json_out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        click.echo(f"wrote {json_out}", err=True)


def _empty_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
