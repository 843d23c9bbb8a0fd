"""``mxbai-rerank batch``: score a JSON lines / Parquet file or folder of pairs into Parquet on Ray.

Everything that can be checked without Ray (the input's format and first rows, the output
folder, a local model directory, this machine's GPUs) is checked before Ray starts, which
takes seconds. Ray's own console output (its log lines, progress bars, the workers' output
and the core worker's native log lines) stays off the terminal unless ``--verbose``; the
command shows one progress bar of its own when stderr is a terminal.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import click

from ._common import (
    DEBUG_ENV,
    CliError,
    OneLineErrorCommand,
    check_model_source,
    chunking_kwargs,
    chunking_options,
    first_line,
    handle_errors,
    model_options,
    stderr_is_terminal,
)

logger = logging.getLogger(__name__)

__all__ = ["batch"]

# How many ``cause`` links to follow when reducing a Ray error to its root cause.
_MAX_CAUSE_DEPTH = 10


_ERROR_LINE = re.compile(r"^\s*((?:\w+\.)*\w*(?:Error|Exception)): (\S.*)$")


def _describe_ray_error(exc: BaseException) -> str:
    """``Type: message`` of the user-level error inside Ray's wrappers.

    A task error carries the original exception (``RayTaskError.cause``); an actor that died
    in its constructor only carries the remote traceback as text, whose last ``Error: ...``
    line is the original error.
    """
    chain = [exc]
    for _ in range(_MAX_CAUSE_DEPTH):
        inner = getattr(chain[-1], "cause", None) or chain[-1].__cause__
        if not isinstance(inner, BaseException) or inner in chain:
            break
        chain.append(inner)
    for error in reversed(chain):
        if type(error).__module__.startswith("ray."):
            continue
        if first_line(error):
            return f"{type(error).__name__}: {first_line(error)}"
    for error in chain:
        for line in reversed(str(error).splitlines()):
            match = _ERROR_LINE.match(line)
            if match:
                return f"{match.group(1).rsplit('.', 1)[-1]}: {match.group(2).strip()}"
    return f"{type(exc).__name__}: {first_line(exc) or 'see the Ray logs (/tmp/ray/session_latest/logs)'}"


def _start_ray(ray: Any, address: str | None, *, verbose: bool) -> bool:
    """Join ``address`` or start a local instance; ``True`` when this call started Ray.

    Without ``verbose`` the driver's ``ray`` logger shows errors only and the workers' output
    is not forwarded to this terminal (it stays in the Ray session's log files).
    """
    if ray.is_initialized():
        return False
    options: dict[str, Any] = {"logging_level": logging.INFO if verbose else logging.ERROR, "log_to_driver": verbose}
    if address:
        logger.info("joining the Ray cluster at %s", address)
        ray.init(address=address, **options)
    else:
        ray.init(address="local", include_dashboard=False, **options)
    return True


def _local_cpus_per_actor(ray: Any, num_actors: int, requested: float | None, gpus: float) -> float:
    """CPUs per actor on the local instance, checked: Ray Data's read and write tasks need a free CPU.

    Actors hold their CPUs for the whole run, so a pool that takes every CPU starves the
    read tasks feeding it and the run waits forever. A fixed local instance never grows,
    so such a pool is refused (or, with no explicit ``requested``, shrunk to fit).
    """
    from ..ray._pipeline import actor_cpu_budget

    available = ray.cluster_resources()
    total_cpus = float(available.get("CPU", 0))
    spare = actor_cpu_budget(total_cpus)
    fits = spare / num_actors
    cpus = min(1.0, fits) if requested is None else requested
    if num_actors * cpus > spare + 1e-9:
        raise CliError(
            f"{num_actors} actor(s) x {cpus:g} CPU leave no CPU for reading and writing on this "
            f"{total_cpus:g}-CPU machine; use --num-cpus-per-actor {fits:.2g} (fractions are fine) or fewer actors"
        )
    total_gpus = float(available.get("GPU", 0))
    if num_actors * gpus > total_gpus:
        raise CliError(
            f"{num_actors} actor(s) x {gpus:g} GPU need {num_actors * gpus:g} GPUs but this machine has "
            f"{total_gpus:g}; use fewer --num-actors or --num-gpus-per-actor, or --ray-address"
        )
    return cpus


class _BelowError(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


class _Nothing(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


def _console_handlers(name: str) -> list[logging.Handler]:
    return [
        handler
        for handler in logging.getLogger(name).handlers
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)
    ]


@contextmanager
def _ray_output(ray: Any, *, verbose: bool) -> Iterator[None]:
    """Ray's Python-level console output during one run; every setting is restored afterwards.

    Ray Data logs a failed task with its full traceback on stderr while the command prints one
    line, so its errors stay in its log file (unless ``MXBAI_RERANK_DEBUG``). Without
    ``verbose`` its progress bars and all its console lines are off, and the ``ray`` logger
    shows errors only.
    """
    context = ray.data.DataContext.get_current()
    saved = (context.enable_progress_bars, context.raise_original_map_exception)
    ray_logger = logging.getLogger("ray")
    saved_level = ray_logger.level
    # The scorer's own exception (not Ray Data's generic UserCodeException) reaches the driver.
    context.raise_original_map_exception = True
    console_filter: logging.Filter | None = None
    if not verbose:
        context.enable_progress_bars = False
        ray_logger.setLevel(logging.ERROR)
        console_filter = _Nothing()
    elif not os.environ.get(DEBUG_ENV):
        console_filter = _BelowError()
    handlers = _console_handlers("ray.data") if console_filter is not None else []
    for handler in handlers:
        handler.addFilter(console_filter)  # type: ignore[arg-type]
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(console_filter)  # type: ignore[arg-type]
        ray_logger.setLevel(saved_level)
        context.enable_progress_bars, context.raise_original_map_exception = saved


def _fileno(stream: IO[str]) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        return None


class _NativeStderr:
    """What native code writes to file descriptor 2 during a run goes to a file (when enabled).

    Ray's core worker (C++) writes its error-level log lines, such as a ``core_worker.cc``
    notice about actor constructor arguments on every successful run, straight to the
    process's stderr, past ``sys.stderr`` and every logging setting; they are in the Ray
    session's log files as well. Python's ``sys.stderr`` keeps writing to the terminal, so the
    command's own progress bar, warnings and error line are not affected. The file is removed
    unless the run failed and something was written to it.
    """

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self.path: Path | None = None
        self._saved_fd: int | None = None
        self._python_stderr: IO[str] | None = None

    def __enter__(self) -> _NativeStderr:
        if not self.enabled:
            return self
        fd, name = tempfile.mkstemp(prefix="mxbai-rerank-batch-", suffix=".log")
        self.path = Path(name)
        sys.stderr.flush()
        self._saved_fd = os.dup(2)
        if _fileno(sys.stderr) == 2:
            # sys.stderr writes to fd 2: give Python a stream of its own on the terminal.
            self._python_stderr = sys.stderr
            sys.stderr = os.fdopen(
                os.dup(self._saved_fd),
                "w",
                buffering=1,
                encoding=getattr(sys.stderr, "encoding", None) or "utf-8",
                errors="backslashreplace",
            )
        os.dup2(fd, 2)
        os.close(fd)
        return self

    def has_output(self) -> bool:
        return self.path is not None and self.path.exists() and self.path.stat().st_size > 0

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if self._saved_fd is None:
            return
        if self._python_stderr is not None:
            replacement, sys.stderr = sys.stderr, self._python_stderr
            replacement.close()
            self._python_stderr = None
        os.dup2(self._saved_fd, 2)
        os.close(self._saved_fd)
        self._saved_fd = None
        if self.path is not None and (exc_type is None or not self.has_output()):
            self.path.unlink(missing_ok=True)


def _check_local_gpus(num_actors: int, gpus_per_actor: float, device: str) -> None:
    """A local instance has this machine's GPUs only: refuse a pool that needs more, before Ray starts."""
    if gpus_per_actor <= 0 and not device.startswith("cuda"):
        return
    import torch

    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device.startswith("cuda") and available == 0:
        raise CliError(f"--device {device}: CUDA is not available on this machine (use --device cpu or auto)")
    if num_actors * gpus_per_actor > available:
        raise CliError(
            f"{num_actors} actor(s) x {gpus_per_actor:g} GPU need {num_actors * gpus_per_actor:g} GPUs but this "
            f"machine has {available}; use fewer --num-actors or --num-gpus-per-actor, or --ray-address"
        )


_EXAMPLES = """\b
Examples:
  # one actor on this machine: JSON lines in, a folder of Parquet files out
  mxbai-rerank batch -m mixedbread-ai/mxbai-rerank-base-v2 --input pairs.jsonl --output scored.parquet

\b
  # the 100 best rows per query, scores in (0, 1); 2 actors of half a CPU each
  mxbai-rerank batch -m ./my-model --input pairs/ --output top100.parquet \\
      --top-k-per-query 100 --normalize --num-actors 2 --num-cpus-per-actor 0.5

\b
  # a Ray cluster with 8 GPUs, one actor per GPU, with Ray's own progress and logs
  mxbai-rerank batch --ray-address 10.0.0.1:6379 -m mixedbread-ai/mxbai-rerank-large-v2 \\
      --input s3://bucket/pairs/ --output s3://bucket/scored.parquet \\
      --num-actors 8 --num-gpus-per-actor 1 --dtype bfloat16 --batch-size 2048 --verbose
"""


@click.command("batch", cls=OneLineErrorCommand, epilog=_EXAMPLES)
@model_options(family=True, backend=True)
@click.option(
    "--input",
    "input_path",
    required=True,
    help="JSON lines or Parquet file or folder with 'query' and 'document' columns (others are kept).",
)
@click.option("--output", "output_path", required=True, help="Output Parquet folder (one file per write task).")
@click.option(
    "--input-format",
    type=click.Choice(["auto", "jsonl", "parquet"]),
    default="auto",
    show_default=True,
    help="Input format; 'auto' decides by file extension.",
)
@click.option("--num-actors", type=click.IntRange(min=1), default=1, show_default=True, help="Scoring actors.")
@click.option(
    "--ray-address",
    envvar="RAY_ADDRESS",
    default=None,
    help="Join this Ray cluster (e.g. 10.0.0.1:6379 or 'auto'); default: start a local instance.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="Rows per call of an actor; its forward passes are packed by --max-batch-tokens.",
)
@click.option("--top-k-per-query", type=click.IntRange(min=1), default=None, help="Keep the K best rows per query.")
@click.option("--normalize/--raw", default=False, show_default=True, help="Scores in (0, 1) or raw model scores.")
@click.option(
    "--num-cpus-per-actor",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="CPUs reserved per actor; torch threads = max(1, int(N)). Fractions are fine.  "
    "[default: 1; on a local instance at most (CPUs - 1) / actors]",
)
@click.option(
    "--num-gpus-per-actor",
    type=click.FloatRange(min=0),
    default=0,
    show_default=True,
    help="GPUs per actor; fractions share a GPU between actors.",
)
@click.option("--score-column", default="score", show_default=True, help="Name of the added score column.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@click.option(
    "--verbose",
    "-v",
    is_flag=True,
    help="Show Ray's own output: its log lines, progress bars and the workers' output. Default: one "
    "progress bar of rows scored (when stderr is a terminal), and an error as one line.",
)
@chunking_options
@handle_errors
def batch(
    model: str,
    device: str,
    max_length: int | None,
    dtype: str,
    max_batch_tokens: int | None,
    family: str,
    backend: str | None,
    input_path: str,
    output_path: str,
    input_format: str,
    num_actors: int,
    ray_address: str | None,
    batch_size: int,
    top_k_per_query: int | None,
    normalize: bool,
    num_cpus_per_actor: float | None,
    num_gpus_per_actor: float,
    score_column: str,
    overwrite: bool,
    verbose: bool,
    long_documents: str,
    chunk_size: int | None,
    chunk_stride: int | None,
    chunk_aggregate: str,
) -> None:
    """Score millions of (query, document) pairs on a Ray cluster into Parquet.

    Every input column (pair_id, qid, docid, ...) is kept and a float32 score column is added;
    an 'instruction' column, if present, is used per row (v2 models). Without --ray-address a
    local Ray instance is started for this run. --device auto means cuda when
    --num-gpus-per-actor > 0, else cpu.

    The input's format and first rows, the output folder and a local model directory are
    checked before Ray starts; Ray's own output is shown with --verbose.
    """
    from .._extras import require

    # MissingExtraError, ValueError (bad input, PairsInputError, ModelLoadError) and OSError
    # become one-line errors in ``handle_errors``; Ray's wrapped errors are unwrapped here.
    ray = require("ray", "ray")
    from ..ray import inspect_pairs, rerank_parquet
    from ..ray._preflight import check_model_path, check_output

    # Everything that can be checked without Ray, before Ray starts (seconds, and its own output).
    chosen_family = None if family == "auto" else family
    chunking = chunking_kwargs(long_documents, chunk_size, chunk_stride, chunk_aggregate)
    if not ray_address:
        check_model_source(model)  # announce a hub download; fail fast when the hub is unreachable
        check_model_path(model, chosen_family)  # the local workers see this machine's files and cache
        _check_local_gpus(num_actors, num_gpus_per_actor, device)
    inspect_pairs(
        input_path, input_format=input_format, score_column=score_column, group_by=["query"] if top_k_per_query else []
    )
    check_output(output_path, overwrite=overwrite, input_path=input_path)

    progress = stderr_is_terminal() and not verbose
    started = False
    with _NativeStderr(enabled=not verbose) as native:
        try:
            if progress and not ray_address and not ray.is_initialized():
                click.echo("starting a local Ray instance...", err=True)
            try:
                started = _start_ray(ray, ray_address, verbose=verbose)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise CliError(f"cannot start or join Ray ({ray_address or 'local'}): {first_line(exc)}") from None
            if started and not ray_address:
                num_cpus_per_actor = _local_cpus_per_actor(ray, num_actors, num_cpus_per_actor, num_gpus_per_actor)
            with _ray_output(ray, verbose=verbose):
                rows = rerank_parquet(
                    input_path,
                    output_path,
                    model,
                    overwrite=overwrite,
                    input_format=input_format,  # type: ignore[arg-type]
                    show_progress=progress,
                    num_actors=num_actors,
                    num_cpus_per_actor=num_cpus_per_actor,
                    num_gpus_per_actor=num_gpus_per_actor,
                    batch_size=batch_size,
                    top_k_per_query=top_k_per_query,
                    normalize=normalize,
                    device=None if device == "auto" else device,
                    torch_dtype=None if dtype == "auto" else dtype,
                    max_batch_tokens=max_batch_tokens,
                    score_column=score_column,
                    model_kwargs={
                        **({} if max_length is None else {"max_length": max_length}),
                        **({} if chosen_family is None else {"family": chosen_family}),
                        **({} if backend is None else {"backend": backend}),
                    },
                    chunking=chunking,
                )
        except ray.exceptions.RayError as exc:
            if os.environ.get(DEBUG_ENV):
                raise
            console = f"Ray's console output: {native.path}; " if native.has_output() else ""
            raise CliError(
                f"scoring failed: {_describe_ray_error(exc)} ({console}logs: /tmp/ray/session_latest/logs; "
                f"{DEBUG_ENV}=1 for the traceback)"
            ) from None
        finally:
            if started:
                ray.shutdown()
    click.echo(f"wrote {rows} scored rows to {output_path}")
