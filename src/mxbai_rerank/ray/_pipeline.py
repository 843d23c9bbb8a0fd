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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .._extras import require
from ._scorer import RerankScorer

if TYPE_CHECKING:
    import pyarrow as pa
    from ray.data import Dataset

logger = logging.getLogger(__name__)

__all__ = ["PairsInputError", "read_pairs", "rerank_dataset", "rerank_parquet", "top_k_per_group"]

InputFormat = Literal["auto", "jsonl", "parquet"]

_JSON_EXTENSIONS = ["jsonl", "json", "ndjson", "jsonl.gz", "json.gz", "ndjson.gz", "jsonl.zst", "json.zst"]
_PARQUET_EXTENSIONS = ["parquet", "pq"]
DEFAULT_BATCH_SIZE = 256


class PairsInputError(ValueError):
    """The input cannot be reranked: missing path, unknown format, missing or mistyped columns."""


def _kind_of(name: str) -> str | None:
    lower = name.lower()
    if any(lower.endswith("." + ext) for ext in _PARQUET_EXTENSIONS):
        return "parquet"
    if any(lower.endswith("." + ext) for ext in _JSON_EXTENSIONS):
        return "jsonl"
    return None


def _detect_format(path: str) -> str:
    kind = _kind_of(path.rstrip("/"))
    if kind is not None:
        return kind
    if "://" in path:
        raise PairsInputError(
            f"cannot tell the format of {path!r} from its name; pass input_format='jsonl' or 'parquet'"
        )
    local = Path(path)
    if not local.exists():
        raise PairsInputError(f"input {path!r} does not exist")
    if not local.is_dir():
        raise PairsInputError(f"input {path!r} is neither JSON lines (.jsonl, .json) nor Parquet (.parquet)")
    kinds = {
        _kind_of(f.name)
        for f in local.rglob("*")
        if f.is_file() and not f.name.startswith((".", "_")) and _kind_of(f.name) is not None
    }
    if not kinds:
        raise PairsInputError(f"folder {path!r} holds no .jsonl, .json or .parquet files")
    if len(kinds) > 1:
        raise PairsInputError(f"folder {path!r} mixes JSON lines and Parquet files; pass one format")
    return kinds.pop()


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
    kind = _detect_format(path) if input_format == "auto" else input_format
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
    base = getattr(schema, "base_schema", schema)
    if not isinstance(base, pa.Schema):
        return  # pandas blocks: the scorer checks values row by row
    arrow = base

    def is_text(t: pa.DataType) -> bool:
        is_view = getattr(pa.types, "is_string_view", None)
        return pa.types.is_string(t) or pa.types.is_large_string(t) or bool(is_view and is_view(t))

    query_type = arrow.field("query").type
    if not is_text(query_type):
        raise PairsInputError(f"column 'query' must hold strings, got {query_type}")
    document_type = arrow.field("document").type
    if not (is_text(document_type) or pa.types.is_struct(document_type)):
        raise PairsInputError(f"column 'document' must hold strings or objects, got {document_type}")
    if pa.types.is_struct(document_type) and rank_fields is None:
        logger.info("object documents are scored as 'key: value' lines of all their fields; see rank_fields")
    if "instruction" in names:
        instruction_type = arrow.field("instruction").type
        if not (is_text(instruction_type) or pa.types.is_null(instruction_type)):
            raise PairsInputError(f"column 'instruction' must hold strings, got {instruction_type}")


def _warn_if_no_spare_cpu(ray: Any, actor_cpus: float) -> None:
    # Actors hold their CPUs for the whole run; read/write tasks need at least one more.
    if not ray.is_initialized():
        return
    total = float(ray.cluster_resources().get("CPU", 0))
    if actor_cpus > total - 1:
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
    }
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


def rerank_parquet(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    model: str,
    *,
    overwrite: bool = False,
    input_format: InputFormat = "auto",
    **options: Any,
) -> int:
    """Score a JSON lines / Parquet file or folder into a folder of Parquet files; the rows written.

    ``options`` are those of :func:`rerank_dataset`. The output folder holds one file per
    write task; read it back with ``pyarrow.parquet.read_table(output_path)`` or
    ``ray.data.read_parquet(output_path)``.
    """
    ray = require("ray", "ray")
    pads = require("pyarrow.dataset", "ray")
    output = os.fspath(output_path)
    ds = read_pairs(input_path, input_format=input_format)
    result = rerank_dataset(ds, model, **options)  # checks the input before touching the output
    _prepare_output(output, overwrite)
    mode = ray.data.SaveMode.OVERWRITE if overwrite else ray.data.SaveMode.ERROR
    result.write_parquet(output, mode=mode)
    rows = pads.dataset(output, format="parquet").count_rows()
    logger.info("wrote %d rows to %s", rows, output)
    return rows
