"""Checks of a batch job's input, output and model that need no Ray: run them before Ray starts.

Starting Ray takes seconds and prints its own lines, so a missing file, an unknown format, a
missing column or an output that cannot be written is reported first, in one sentence that
names the file (and line) at fault. Everything here reads at most the first
:data:`SAMPLE_ROWS` rows of JSON lines, or the schema of the first Parquet file; remote paths
(``s3://...``) are only checked for a known format and left to Ray Data.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "PairsInputError",
    "PairsSource",
    "check_arrow_schema",
    "check_model_path",
    "check_output",
    "count_rows",
    "inspect_pairs",
]

_JSON_EXTENSIONS = ["jsonl", "json", "ndjson", "jsonl.gz", "json.gz", "ndjson.gz", "jsonl.zst", "json.zst"]
_PARQUET_EXTENSIONS = ["parquet", "pq"]
# Rows of the first file(s) whose columns and types are checked before Ray starts.
SAMPLE_ROWS = 100
# Longest first-rows line read when sampling (a JSON array on one line is not JSON lines).
_MAX_LINE_BYTES = 64 * 1024 * 1024


class PairsInputError(ValueError):
    """The input cannot be reranked: missing path, unknown format, missing or mistyped columns."""


@dataclass(frozen=True)
class PairsSource:
    """A checked input: its format, its local files (none for a remote path) and sampled columns."""

    path: str
    format: str  # "jsonl" or "parquet"
    files: tuple[Path, ...]
    columns: tuple[str, ...]  # in the first rows; empty when not sampled (remote, .zst)

    @property
    def is_remote(self) -> bool:
        return "://" in self.path


def _kind_of(name: str) -> str | None:
    lower = name.lower()
    if any(lower.endswith("." + ext) for ext in _PARQUET_EXTENSIONS):
        return "parquet"
    if any(lower.endswith("." + ext) for ext in _JSON_EXTENSIONS):
        return "jsonl"
    return None


def _visible(path: Path, root: Path) -> bool:
    # Ray Data skips hidden and metadata files (".crc", "_SUCCESS", "_metadata").
    return not any(part.startswith((".", "_")) for part in path.relative_to(root).parts)


def detect_format(path: str) -> str:
    """``"jsonl"`` or ``"parquet"`` from the extension of ``path`` or of the files in a local folder."""
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
        if f.is_file() and _visible(f, local) and _kind_of(f.name) is not None
    }
    if not kinds:
        raise PairsInputError(f"folder {path!r} holds no .jsonl, .json or .parquet files")
    if len(kinds) > 1:
        raise PairsInputError(f"folder {path!r} mixes JSON lines and Parquet files; pass one format")
    return kinds.pop()


def _local_files(path: Path, kind: str) -> list[Path]:
    if path.is_file():
        return [path]
    extensions = _PARQUET_EXTENSIONS if kind == "parquet" else _JSON_EXTENSIONS
    return sorted(
        f
        for f in path.rglob("*")
        if f.is_file() and _visible(f, path) and any(f.name.lower().endswith("." + e) for e in extensions)
    )


def _json_rows(path: Path, limit: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """``("file:line", row)`` for the first ``limit`` non-blank lines of one JSON lines file."""
    lower = path.name.lower()
    stream: IO[bytes] = gzip.open(path, "rb") if lower.endswith(".gz") else open(path, "rb")  # noqa: SIM115
    with stream:
        lineno = seen = 0
        while seen < limit:
            try:
                raw = stream.readline(_MAX_LINE_BYTES)
            except (OSError, EOFError) as exc:  # e.g. a truncated or corrupt .gz
                raise PairsInputError(f"cannot read {str(path)!r}: {_first_line(exc)}") from None
            if not raw:
                return
            lineno += 1
            where = f"{path}:{lineno}"
            if len(raw) >= _MAX_LINE_BYTES and not raw.endswith(b"\n"):
                raise PairsInputError(f"{where}: line longer than {_MAX_LINE_BYTES} bytes: not JSON lines")
            try:
                text = raw.decode("utf-8").removeprefix("\ufeff").strip()
            except UnicodeDecodeError:
                raise PairsInputError(f"{where}: not UTF-8 text (JSON lines expected)") from None
            if not text:
                continue
            try:
                row = json.loads(text)
            except ValueError as exc:
                raise PairsInputError(f"{where}: invalid JSON ({exc}); one JSON object per line expected") from None
            if not isinstance(row, dict):
                raise PairsInputError(
                    f"{where}: expected a JSON object per line with 'query' and 'document', got {_json_type(row)}"
                )
            seen += 1
            yield where, row


def _check_json_row(where: str, row: dict[str, Any], *, score_column: str, group_by: Sequence[str]) -> None:
    missing = [c for c in ("query", "document", *group_by) if c not in row]
    if missing:
        raise PairsInputError(
            f"{where}: no {', '.join(repr(c) for c in dict.fromkeys(missing))} key; every row needs 'query' and "
            f"'document' (found: {', '.join(row) or 'none'})"
        )
    if score_column in row:
        raise PairsInputError(
            f"{where}: the input already has a {score_column!r} column; rename it or choose another score column"
        )
    if not isinstance(row["query"], str):
        raise PairsInputError(f"{where}: 'query' must be a string, got {_json_type(row['query'])}")
    if not isinstance(row["document"], (str, dict)):
        raise PairsInputError(f"{where}: 'document' must be a string or an object, got {_json_type(row['document'])}")
    instruction = row.get("instruction")
    if instruction is not None and not isinstance(instruction, str):
        raise PairsInputError(f"{where}: 'instruction' must be a string or null, got {_json_type(instruction)}")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array"}
    return names.get(type(value), "an object" if isinstance(value, dict) else type(value).__name__)


def check_arrow_schema(
    schema: pa.Schema, *, score_column: str, group_by: Sequence[str] = (), where: str = "the input"
) -> None:
    """Raise :class:`PairsInputError` unless ``schema`` has the columns and types to be reranked."""
    import pyarrow as pa

    names = list(schema.names)
    missing = [c for c in ("query", "document", *group_by) if c not in names]
    if missing:
        raise PairsInputError(
            f"{where} has no {', '.join(repr(c) for c in dict.fromkeys(missing))} column; "
            f"every row needs 'query' and 'document' (found columns: {', '.join(names) or 'none'})"
        )
    if score_column in names:
        raise PairsInputError(
            f"{where} already has a {score_column!r} column; rename it or choose another score column"
        )

    def is_text(t: pa.DataType) -> bool:
        is_view = getattr(pa.types, "is_string_view", None)
        return pa.types.is_string(t) or pa.types.is_large_string(t) or bool(is_view and is_view(t))

    query_type = schema.field("query").type
    if not is_text(query_type):
        raise PairsInputError(f"column 'query' of {where} must hold strings, got {query_type}")
    document_type = schema.field("document").type
    if not (is_text(document_type) or pa.types.is_struct(document_type)):
        raise PairsInputError(f"column 'document' of {where} must hold strings or objects, got {document_type}")
    if "instruction" in names:
        instruction_type = schema.field("instruction").type
        if not (is_text(instruction_type) or pa.types.is_null(instruction_type)):
            raise PairsInputError(f"column 'instruction' of {where} must hold strings, got {instruction_type}")


def inspect_pairs(
    path: str | os.PathLike[str],
    *,
    input_format: str = "auto",
    score_column: str = "score",
    group_by: Sequence[str] = (),
    sample_rows: int = SAMPLE_ROWS,
) -> PairsSource:
    """Check a local input before any Ray work: it exists and is readable, its format is known, and
    its first rows (JSON lines) or its schema (Parquet) have ``query`` and ``document``.

    A remote path (``s3://...``) is only checked for a known format.
    """
    path = os.fspath(path)
    if input_format not in ("auto", "jsonl", "parquet"):
        raise PairsInputError(f"unknown input_format {input_format!r}; use 'auto', 'jsonl' or 'parquet'")
    if "://" in path:
        kind = detect_format(path) if input_format == "auto" else input_format
        return PairsSource(path, kind, (), ())
    local = Path(path)
    if not local.exists():
        raise PairsInputError(f"input {path!r} does not exist")
    kind = detect_format(path) if input_format == "auto" else input_format
    files = _local_files(local, kind)
    if not files:
        wanted = ".parquet" if kind == "parquet" else ".jsonl or .json"
        raise PairsInputError(f"folder {path!r} holds no {wanted} files")
    unreadable = [f for f in files if not os.access(f, os.R_OK)]
    if unreadable:
        raise PairsInputError(f"cannot read input file {str(unreadable[0])!r}: permission denied")
    if kind == "parquet":
        columns = _check_parquet(files, score_column=score_column, group_by=group_by)
    else:
        columns = _check_jsonl(path, files, score_column=score_column, group_by=group_by, sample_rows=sample_rows)
    return PairsSource(path, kind, tuple(files), columns)


def _check_parquet(files: Sequence[Path], *, score_column: str, group_by: Sequence[str]) -> tuple[str, ...]:
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(files[0])
    except (OSError, ValueError) as exc:  # pyarrow.ArrowInvalid is a ValueError
        raise PairsInputError(f"{str(files[0])!r} is not a readable Parquet file ({_first_line(exc)})") from None
    check_arrow_schema(schema, score_column=score_column, group_by=group_by, where=repr(str(files[0])))
    return tuple(schema.names)


def _check_jsonl(
    path: str, files: Sequence[Path], *, score_column: str, group_by: Sequence[str], sample_rows: int
) -> tuple[str, ...]:
    """Check the first ``sample_rows`` rows (over as many files as needed); their keys."""
    columns: dict[str, None] = {}
    seen = 0
    unsampled = False
    for file in files:
        if file.name.lower().endswith(".zst"):
            unsampled = True  # no zstandard decoder here; Ray Data reads it
            continue
        try:
            for where, row in _json_rows(file, sample_rows - seen):
                _check_json_row(where, row, score_column=score_column, group_by=group_by)
                columns.update(dict.fromkeys(row))
                seen += 1
        except OSError as exc:
            raise PairsInputError(f"cannot read input {str(file)!r}: {exc.strerror or exc}") from None
        if seen >= sample_rows:
            break
    if not seen and not unsampled:
        raise PairsInputError(f"input {path!r} has no rows (only empty or blank lines)")
    return tuple(columns)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def count_rows(source: PairsSource) -> int | None:
    """About how many rows a local input has, when that is cheap to know (for a progress bar):
    Parquet metadata, or the lines of uncompressed JSON lines files (one pass over the bytes,
    blank lines included); ``None`` for remote or compressed inputs."""
    if source.is_remote or not source.files:
        return None
    if source.format == "parquet":
        import pyarrow.parquet as pq

        try:
            return sum(pq.ParquetFile(f).metadata.num_rows for f in source.files)
        except (OSError, ValueError):
            return None
    if any(f.name.lower().endswith((".gz", ".zst")) for f in source.files):
        return None
    rows = 0
    try:
        for file in source.files:
            last = b"\n"
            with open(file, "rb") as handle:
                while chunk := handle.read(1 << 20):
                    rows += chunk.count(b"\n")
                    last = chunk[-1:]
            rows += last != b"\n"  # a last line without a newline
    except OSError:
        return None
    return rows


def check_output(
    output: str | os.PathLike[str], *, overwrite: bool, input_path: str | os.PathLike[str] | None = None
) -> None:
    """Refuse, before any work, an output that exists (without ``overwrite``), that would delete
    the input, or whose folder cannot be created or written. Remote outputs are left to Ray."""
    output = os.fspath(output)
    if "://" in output:
        return
    path = Path(output).expanduser()
    if path.exists():
        if not overwrite:
            raise PairsInputError(f"output {output!r} already exists; remove it or pass overwrite=True (--overwrite)")
        if input_path is not None and "://" not in os.fspath(input_path):
            source = Path(os.fspath(input_path)).expanduser().resolve()
            target = path.resolve()
            if source == target or target in source.parents:
                raise PairsInputError(
                    f"output {output!r} holds the input {os.fspath(input_path)!r}: overwriting it would delete the "
                    "input; choose another output"
                )
        parent = path.resolve().parent
        if not os.access(parent, os.W_OK | os.X_OK):
            raise PairsInputError(f"cannot replace output {output!r}: folder {str(parent)!r} is not writable")
        return
    ancestor = path.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise PairsInputError(f"cannot create output {output!r}: {str(ancestor)!r} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise PairsInputError(f"cannot create output {output!r}: folder {str(ancestor)!r} is not writable")


def check_model_path(model: str, family: str | None = None) -> None:
    """A :class:`~mxbai_rerank.ModelLoadError` when ``model`` names a local path that ``load`` would
    refuse (missing, a file, no readable ``config.json``, not a known reranker family), read from
    its config alone. Hub ids are not checked here (that needs the network)."""
    from .._loader import identify_family
    from .._registry import looks_like_local_path

    if Path(os.path.expanduser(model)).exists() or looks_like_local_path(model):
        identify_family(model, family)
