"""``mxbai-rerank batch``: score a JSON lines / Parquet file or folder of pairs into Parquet on Ray."""

from __future__ import annotations

import logging
import os
import re
from typing import Any

import click

from ._common import DEBUG_ENV, CliError, OneLineErrorCommand, handle_errors, model_options

logger = logging.getLogger(__name__)

__all__ = ["batch"]

# How many ``cause`` links to follow when reducing a Ray error to its root cause.
_MAX_CAUSE_DEPTH = 10


def _one_line(text: object) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


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
        if _one_line(error):
            return f"{type(error).__name__}: {_one_line(error)}"
    for error in chain:
        for line in reversed(str(error).splitlines()):
            match = _ERROR_LINE.match(line)
            if match:
                return f"{match.group(1).rsplit('.', 1)[-1]}: {match.group(2).strip()}"
    return f"{type(exc).__name__}: {_one_line(exc) or 'see the Ray logs (/tmp/ray/session_latest/logs)'}"


def _start_ray(ray: Any, address: str | None) -> bool:
    """Join ``address`` or start a local instance; ``True`` when this call started Ray."""
    if ray.is_initialized():
        return False
    if address:
        logger.info("joining the Ray cluster at %s", address)
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=bool(os.environ.get(DEBUG_ENV)))
    else:
        ray.init(
            address="local",
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=bool(os.environ.get(DEBUG_ENV)),
        )
    return True


def _local_cpus_per_actor(ray: Any, num_actors: int, requested: float | None, gpus: float) -> float:
    """CPUs per actor on the local instance, checked: Ray Data's read and write tasks need a free CPU.

    Actors hold their CPUs for the whole run, so a pool that takes every CPU starves the
    read tasks feeding it and the run waits forever. A fixed local instance never grows,
    so such a pool is refused (or, with no explicit ``requested``, shrunk to fit).
    """
    available = ray.cluster_resources()
    total_cpus = float(available.get("CPU", 0))
    spare = total_cpus - 1 if total_cpus > 1 else total_cpus / 2
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


def _quiet_ray_data_errors() -> None:
    """Keep Ray Data's error tracebacks in its log file, off the console: the command prints one line.

    Ray Data logs a failed task with its full traceback on stderr; its progress lines stay.
    """
    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.addFilter(_BelowError())


def _check_model(model: str) -> None:
    """Fail fast, before any actor starts, on a model this machine (and so its workers) cannot load."""
    from .._registry import family_of_config
    from .._runtime import read_config

    if family_of_config(read_config(model)) is None:
        raise CliError(f"{model!r} is not a reranker: expected a v1 (sequence classifier) or v2 (Qwen2) model")


@click.command("batch", cls=OneLineErrorCommand)
@model_options()
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
@handle_errors
def batch(
    model: str,
    device: str,
    max_length: int | None,
    dtype: str,
    max_batch_tokens: int | None,
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
) -> None:
    """Score millions of (query, document) pairs on a Ray cluster into Parquet.

    Every input column (pair_id, qid, docid, ...) is kept and a float32 score column is added;
    an 'instruction' column, if present, is used per row (v2 models). Without --ray-address a
    local Ray instance is started for this run. --device auto means cuda when
    --num-gpus-per-actor > 0, else cpu.
    """
    from .._extras import require

    # MissingExtraError, ValueError (bad input, PairsInputError, ModelLoadError) and OSError
    # become one-line errors in ``handle_errors``; Ray's wrapped errors are unwrapped here.
    ray = require("ray", "ray")
    from ..ray import rerank_parquet

    if not ray_address:
        _check_model(model)  # the local workers see this machine's files and cache
    started = False
    try:
        try:
            started = _start_ray(ray, ray_address)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise CliError(f"cannot start or join Ray ({ray_address or 'local'}): {_one_line(exc)}") from None
        if started and not ray_address:
            num_cpus_per_actor = _local_cpus_per_actor(ray, num_actors, num_cpus_per_actor, num_gpus_per_actor)
        # The scorer's own exception (not Ray Data's generic UserCodeException) reaches the driver.
        ray.data.DataContext.get_current().raise_original_map_exception = True
        if not os.environ.get(DEBUG_ENV):
            _quiet_ray_data_errors()
        rows = rerank_parquet(
            input_path,
            output_path,
            model,
            overwrite=overwrite,
            input_format=input_format,  # type: ignore[arg-type]
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
            model_kwargs={} if max_length is None else {"max_length": max_length},
        )
    except ray.exceptions.RayError as exc:
        if os.environ.get(DEBUG_ENV):
            raise
        raise CliError(
            f"scoring failed: {_describe_ray_error(exc)} (logs: /tmp/ray/session_latest/logs; "
            f"{DEBUG_ENV}=1 for the traceback)"
        ) from None
    finally:
        if started:
            ray.shutdown()
    click.echo(f"wrote {rows} scored rows to {output_path}")
