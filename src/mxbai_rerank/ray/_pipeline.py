"""Rerank a Ray Dataset of (query, document) rows on an actor pool; read JSONL/Parquet, write Parquet.

Fault tolerance (Ray Data 2.60 defaults that this module relies on and does not override):

* The scoring actors are created with ``max_restarts=-1`` and ``max_task_retries=-1``
  (``ActorPoolMapOperator`` defaults): an actor whose process dies is restarted (its model
  loaded again) and the blocks it was scoring are resubmitted. A block's output exists only
  once its task has returned, so a retried block is never emitted twice.
* ``DataContext.max_errored_blocks == 0`` (default): a block whose scoring raises fails the
  whole run instead of being dropped. :func:`rerank_dataset` warns when it is not 0, because
  rows of errored blocks would then be missing from the output.
* ``DataContext.actor_task_retry_on_errors == False`` (default): Python exceptions (bad
  input, a non-finite score) are not retried; they are deterministic and retrying hides them.
* Write tasks name their files from ``(write_uuid, task_index)``, so a retried write task
  replaces its file instead of adding a second copy. Blocks lost with a dead node are
  rebuilt from lineage by Ray Core.

Resources: actors hold their CPUs for the whole run, and Ray Data's read, repartition and
write tasks need CPUs too; a pool that reserves every CPU of the cluster waits forever for
its input. Keep ``num_actors * num_cpus_per_actor`` at least one CPU below the cluster's
total (fractions are fine: an actor runs ``max(1, int(num_cpus))`` torch threads).
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .._extras import require
from ._preflight import (
    _JSON_EXTENSIONS,
    _PARQUET_EXTENSIONS,
    PairsInputError,
    check_arrow_schema,
    check_output,
    count_rows,
    detect_format,
    inspect_pairs,
)
from ._scorer import RerankScorer

if TYPE_CHECKING:
    import pyarrow as pa
    from ray.data import Dataset

logger = logging.getLogger(__name__)

__all__ = ["PairsInputError", "read_pairs", "rerank_dataset", "rerank_parquet", "top_k_per_group"]

InputFormat = Literal["auto", "jsonl", "parquet"]

DEFAULT_BATCH_SIZE = 256
# Seconds between two reads of the rows-scored counter while a progress bar is shown.
_PROGRESS_POLL_S = 0.5


def read_pairs(
    path: str | os.PathLike[str],
    *,
    input_format: InputFormat = "auto",
    override_num_blocks: int | None = None,
) -> Dataset:
    """A Ray Dataset of the rows in a JSON lines or Parquet file or folder (any filesystem Ray reads).

    ``input_format="auto"`` decides by the file extension, or for a local folder by the
    extensions of the files in it.
    """
    ray = require("ray", "ray")
    path = os.fspath(path)
    if "://" not in path and not Path(path).exists():
        raise PairsInputError(f"input {path!r} does not exist")
    kind = detect_format(path) if input_format == "auto" else input_format
    if kind == "parquet":
        return ray.data.read_parquet(path, file_extensions=_PARQUET_EXTENSIONS, override_num_blocks=override_num_blocks)
    if kind == "jsonl":
        return ray.data.read_json(
            path, lines=True, file_extensions=_JSON_EXTENSIONS, override_num_blocks=override_num_blocks
        )
    raise PairsInputError(f"unknown input_format {input_format!r}; use 'auto', 'jsonl' or 'parquet'")


def _check_schema(
    ds: Dataset, *, score_column: str, group_by: Sequence[str], rank_fields: Sequence[str] | None
) -> None:
    """Raise :class:`PairsInputError` unless ``ds`` has the columns (and types) to be reranked."""
    pa = require("pyarrow", "ray")
    schema = ds.schema()
    if schema is None:
        return  # empty
    names = list(schema.names)
    base = getattr(schema, "base_schema", schema)
    if isinstance(base, pa.Schema):
        check_arrow_schema(base, score_column=score_column, group_by=group_by)
        if pa.types.is_struct(base.field("document").type) and rank_fields is None:
            logger.info("object documents are scored as 'key: value' lines of all their fields; see rank_fields")
        return
    # pandas blocks: names only; the scorer checks values row by row.
    missing = [c for c in ("query", "document", *group_by) if c not in names]
    if missing:
        raise PairsInputError(
            f"the input has no {', '.join(repr(c) for c in dict.fromkeys(missing))} column; "
            f"every row needs 'query' and 'document' (found columns: {', '.join(names) or 'none'})"
        )
    if score_column in names:
        raise PairsInputError(
            f"the input already has a {score_column!r} column; rename it or choose another score column"
        )


def actor_cpu_budget(total_cpus: float) -> float:
    """CPUs the scoring actors may reserve: actors hold their CPUs for the whole run, and Ray
    Data's read and write tasks need one more (half the machine on a one-CPU machine)."""
    return total_cpus - 1 if total_cpus > 1 else total_cpus / 2


def _warn_if_no_spare_cpu(ray: Any, actor_cpus: float) -> None:
    if not ray.is_initialized():
        return
    total = float(ray.cluster_resources().get("CPU", 0))
    if actor_cpus > actor_cpu_budget(total) + 1e-9:
        logger.warning(
            "the scoring actors reserve %g of the cluster's %g CPUs, leaving less than one for Ray Data's read and "
            "write tasks: the run may stall until the cluster grows; lower num_cpus_per_actor (fractions are fine)",
            actor_cpus,
            total,
        )


def _top_k_rows(group: pa.Table, *, k: int, score_column: str) -> pa.Table:
    """The ``k`` best rows of one group, best first; equal scores ordered by a string ``document``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    keys = [(score_column, "descending")]
    if "document" in group.column_names:
        document_type = group.schema.field("document").type
        if pa.types.is_string(document_type) or pa.types.is_large_string(document_type):
            keys.append(("document", "ascending"))
    return group.take(pc.sort_indices(group, sort_keys=keys)[:k])


def rerank_dataset(
    data: Dataset | str | os.PathLike[str],
    model: str,
    *,
    num_actors: int = 1,
    num_cpus_per_actor: float | None = None,
    num_gpus_per_actor: float = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    top_k_per_query: int | None = None,
    group_by: str | Sequence[str] = "query",
    normalize: bool = False,
    device: str | None = None,
    torch_dtype: str | None = None,
    max_batch_tokens: int | None = None,
    rank_fields: Sequence[str] | None = None,
    score_column: str = "score",
    input_format: InputFormat = "auto",
    scorer_cls: type[RerankScorer] = RerankScorer,
    model_kwargs: Mapping[str, Any] | None = None,
    chunking: Mapping[str, Any] | None = None,
    progress: Any | None = None,
) -> Dataset:
    """``data`` with a float32 ``score_column`` added to every row, every input column kept.

    Lazy, like any Ray Dataset: the scoring runs when the result is consumed or written.
    Row order is not preserved (join on an id column, e.g. ``pair_id``).

    Args:
        data: A Ray Dataset with ``query`` and ``document`` columns (and optionally
            ``instruction``), or a JSON lines / Parquet file or folder (see :func:`read_pairs`).
        model: Hub name or a model directory that every Ray node can read.
        num_actors: Size of the actor pool; each actor loads the model once.
        num_cpus_per_actor: CPUs Ray reserves per actor and torch threads on CPU (default 1).
        num_gpus_per_actor: GPUs per actor; > 0 scores on CUDA (fractions share a GPU).
        batch_size: Rows per call of an actor (its forward passes are packed by tokens).
        top_k_per_query: Keep only the ``k`` best rows of each ``group_by`` group.
        group_by: The columns that identify a query for ``top_k_per_query``.
        normalize: Scores in (0, 1) instead of raw model scores.
        device: Overrides the device chosen from ``num_gpus_per_actor``.
        torch_dtype: ``"float32"``, ``"bfloat16"``, ``"float16"``; default: per device.
        max_batch_tokens: Padded tokens per forward pass.
        rank_fields: For object (struct) documents, which fields to score.
        score_column: Name of the added column; must not exist in the input.
        input_format: When ``data`` is a path: ``"auto"``, ``"jsonl"`` or ``"parquet"``.
        scorer_cls: :class:`RerankScorer` or a subclass taking the same constructor arguments.
        model_kwargs: More keyword arguments for :func:`mxbai_rerank.load`.
        chunking: Long-document options, as for ``rank``: ``long_documents="chunk"`` and
            optionally ``chunk_size``, ``chunk_stride``, ``chunk_aggregate``.
        progress: A Ray actor handle with a method ``add(rows)`` that each scoring call reports
            its rows to (see :func:`rerank_parquet`'s ``show_progress``).
    """
    ray = require("ray", "ray")
    if num_actors < 1:
        raise ValueError(f"num_actors must be at least 1, got {num_actors}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if top_k_per_query is not None and top_k_per_query < 1:
        raise ValueError(f"top_k_per_query must be at least 1, got {top_k_per_query}")
    if num_gpus_per_actor < 0 or (num_cpus_per_actor is not None and num_cpus_per_actor <= 0):
        raise ValueError("num_gpus_per_actor must be >= 0 and num_cpus_per_actor > 0")
    keys = [group_by] if isinstance(group_by, str) else list(group_by)
    ds = data if isinstance(data, ray.data.Dataset) else read_pairs(data, input_format=input_format)
    _check_schema(ds, score_column=score_column, group_by=keys if top_k_per_query else [], rank_fields=rank_fields)

    errored = ray.data.DataContext.get_current().max_errored_blocks
    if errored != 0:
        logger.warning(
            "DataContext.max_errored_blocks=%s: rows of blocks that fail to score will be missing from the output",
            errored,
        )
    cpus = 1.0 if num_cpus_per_actor is None else float(num_cpus_per_actor)
    gpus = float(num_gpus_per_actor)
    _warn_if_no_spare_cpu(ray, num_actors * cpus)
    device = device or ("cuda" if gpus > 0 else "cpu")
    scorer_kwargs: dict[str, Any] = {
        "model": str(model),
        "device": device,
        "torch_dtype": torch_dtype,
        "max_batch_tokens": max_batch_tokens,
        "normalize": normalize,
        "rank_fields": None if rank_fields is None else list(rank_fields),
        "num_threads": max(1, int(cpus)) if device == "cpu" else None,
        "score_column": score_column,
        "model_kwargs": dict(model_kwargs or {}),
        "chunking": dict(chunking or {}),
    }
    if progress is not None:
        scorer_kwargs["progress"] = progress
    # Blocks of at most batch_size rows, so that a small input (one file, one block) is still
    # spread over the whole pool: one actor call scores one block.
    scored = ds.repartition(target_num_rows_per_block=batch_size).map_batches(
        scorer_cls,
        fn_constructor_kwargs=scorer_kwargs,
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=num_actors),
        num_cpus=cpus,
        num_gpus=gpus or None,
    )
    if top_k_per_query is None:
        return scored
    return top_k_per_group(scored, top_k_per_query, group_by=keys, score_column=score_column)


def top_k_per_group(
    ds: Dataset, k: int, *, group_by: str | Sequence[str] = "query", score_column: str = "score"
) -> Dataset:
    """The ``k`` best-scored rows of each ``group_by`` group (e.g. a query), all columns kept.

    Rows come out best first within a group; equal scores are ordered by the ``document``
    column when it holds strings. Groups are formed by a hash shuffle with
    ``DataContext.default_hash_shuffle_parallelism`` partitions.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    keys = [group_by] if isinstance(group_by, str) else list(group_by)
    schema = ds.schema(fetch_if_missing=False)  # checked only when known: fetching would run the pipeline
    if schema is not None:
        missing = [c for c in (*keys, score_column) if c not in schema.names]
        if missing:
            raise PairsInputError(f"cannot keep the top {k} per group: no {', '.join(map(repr, missing))} column")
    return ds.groupby(keys).map_groups(
        _top_k_rows, batch_format="pyarrow", fn_kwargs={"k": k, "score_column": score_column}
    )


def _prepare_output(output: str, overwrite: bool) -> None:
    """Refuse to mix a new run's files with an old one's; with ``overwrite``, remove the old output."""
    if "://" in output:
        return  # Ray's SaveMode.ERROR / OVERWRITE decide on remote filesystems.
    path = Path(output)
    if not path.exists():
        return
    if not overwrite:
        raise PairsInputError(f"output {output!r} already exists; remove it or pass overwrite=True (--overwrite)")
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()


class _RowCounter:
    """Rows scored so far, as the scoring actors report them; runs as a Ray actor with no CPU."""

    def __init__(self) -> None:
        self.rows = 0

    def add(self, rows: int) -> None:
        self.rows += rows

    def get(self) -> int:
        return self.rows


def _write_with_progress(ray: Any, result: Dataset, output: str, mode: Any, counter: Any, total: int | None) -> None:
    """``result.write_parquet`` on a thread while a progress bar (stderr) shows the rows scored."""
    from tqdm.auto import tqdm

    failures: list[BaseException] = []

    def write() -> None:
        try:
            result.write_parquet(output, mode=mode)
        except BaseException as exc:  # re-raised on the calling thread
            failures.append(exc)

    def rows_done() -> int:
        # A block retried after an actor died is counted again: never past the total.
        rows = int(ray.get(counter.get.remote()))
        return rows if total is None else min(rows, total)

    thread = threading.Thread(target=write, name="mxbai-rerank-write", daemon=True)
    with tqdm(total=total, desc="Scoring", unit="row") as bar:
        thread.start()
        while thread.is_alive():
            thread.join(_PROGRESS_POLL_S)
            bar.update(rows_done() - bar.n)
        if not failures:
            bar.update(rows_done() - bar.n)
            bar.total = bar.n  # the count of a JSON lines input includes blank lines
            bar.refresh()
    if failures:
        raise failures[0]


def rerank_parquet(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    model: str,
    *,
    overwrite: bool = False,
    input_format: InputFormat = "auto",
    show_progress: bool = False,
    **options: Any,
) -> int:
    """Score a JSON lines / Parquet file or folder into a folder of Parquet files; the rows written.

    ``options`` are those of :func:`rerank_dataset`. The output folder holds one file per
    write task; read it back with ``pyarrow.parquet.read_table(output_path)`` or
    ``ray.data.read_parquet(output_path)``. A local input's first rows and the output folder
    are checked before any Ray work (:func:`~mxbai_rerank.ray.inspect_pairs`).

    ``show_progress``: a progress bar on stderr of the rows scored so far (out of the input's
    rows when they are cheap to count: Parquet metadata, uncompressed JSON lines).
    """
    ray = require("ray", "ray")
    pads = require("pyarrow.dataset", "ray")
    output = os.fspath(output_path)
    group_by = options.get("group_by", "query")
    keys = ([group_by] if isinstance(group_by, str) else list(group_by)) if options.get("top_k_per_query") else []
    source = inspect_pairs(
        input_path, input_format=input_format, score_column=options.get("score_column", "score"), group_by=keys
    )
    check_output(output, overwrite=overwrite, input_path=input_path)
    ds = read_pairs(input_path, input_format=source.format)  # type: ignore[arg-type]
    counter = ray.remote(num_cpus=0)(_RowCounter).remote() if show_progress else None
    try:
        result = rerank_dataset(ds, model, progress=counter, **options)  # checks the input before the output
        _prepare_output(output, overwrite)
        mode = ray.data.SaveMode.OVERWRITE if overwrite else ray.data.SaveMode.ERROR
        if counter is None:
            result.write_parquet(output, mode=mode)
        else:
            _write_with_progress(ray, result, output, mode, counter, count_rows(source))
    finally:
        if counter is not None:
            ray.kill(counter)
    rows = pads.dataset(output, format="parquet").count_rows()
    logger.info("wrote %d rows to %s", rows, output)
    return rows
