"""``mxbai-rerank rank``: rerank documents from a file or stdin for one query."""

from __future__ import annotations

import json
import shutil
from typing import Any

import click

from ._common import (
    CliUsageError,
    InputDocument,
    OneLineErrorCommand,
    check_rank_fields,
    chunking_kwargs,
    chunking_options,
    default_output_format,
    handle_errors,
    input_format_option,
    load_model_or_exit,
    model_options,
    parse_list,
    read_documents,
)

__all__ = ["rank"]

_EPILOG = """\b
Examples:
  mxbai-rerank rank -m mixedbread-ai/mxbai-rerank-base-v2 -q "capital of France" docs.txt
  cat docs.jsonl | mxbai-rerank rank -q "sleep apnea" --rank-fields title,text --top-k 3 -
  mxbai-rerank rank -q "fix a memory leak" --instruction "Find code" --format json code.jsonl
  mxbai-rerank rank -q "side effects" --long-documents chunk --chunk-size 256 long_docs.txt
  mxbai-rerank rank -m ./renamed-copy --family mxbai-v2 -q "parse a date" --input-format text notes.txt

\b
Input: one document per non-blank line, as plain text, or as JSON lines holding strings or
objects (objects are scored through --rank-fields, or as "key: value" lines).
Output: a table on a terminal, JSON lines otherwise, with rank, index (0-based position
among the documents), line (1-based line in the input), score and document."""


def _display_text(value: str | dict[str, Any]) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return " ".join(text.split())


def _table(rows: list[dict[str, Any]], width: int) -> str:
    header = f"{'rank':>4}  {'score':>9}  {'line':>6}  document"
    fixed = len(header) - len("document")
    room = max(width - fixed, 20)
    lines = [header]
    for row in rows:
        text = _display_text(row["document"])
        if len(text) > room:
            text = text[: room - 1] + "…"
        lines.append(f"{row['rank']:>4}  {row['score']:>9.4f}  {row['line']:>6}  {text}")
    return "\n".join(lines)


@click.command("rank", cls=OneLineErrorCommand, epilog=_EPILOG)
@model_options(family=True, backend=True)
@click.option("--query", "-q", required=True, help="The search query.")
@click.option(
    "--instruction", default=None, help="v2 models: an instruction for the task, e.g. 'Find code' (v1: an error)."
)
@click.option(
    "--top-k", "-k", type=click.IntRange(min=1), default=10, show_default=True, help="Show the K best documents."
)
@click.option(
    "--rank-fields",
    default=None,
    metavar="A,B",
    help="JSON-object documents: the fields (dotted paths) to score, comma-separated, e.g. title,text "
    "[default: the whole object as 'key: value' lines]. An error on plain-text documents.",
)
@click.option(
    "--normalize", is_flag=True, help="v2 models: map raw scores into (0, 1); v1 scores are already in (0, 1)."
)
@chunking_options
@input_format_option
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "jsonl", "json"]),
    default=None,
    help="Output format: table, JSON lines, or one JSON array [default: table on a terminal, jsonl otherwise].",
)
@click.argument("file", default="-", metavar="[FILE|-]")
@handle_errors
def rank(
    model: str,
    device: str,
    max_length: int | None,
    dtype: str,
    max_batch_tokens: int | None,
    family: str,
    backend: str | None,
    query: str,
    instruction: str | None,
    top_k: int,
    rank_fields: str | None,
    normalize: bool,
    long_documents: str,
    chunk_size: int | None,
    chunk_stride: int | None,
    chunk_aggregate: str,
    input_format: str,
    output_format: str | None,
    file: str,
) -> None:
    """Rerank the documents of FILE (or stdin, '-') for one query, best first."""
    if not query.strip():
        raise CliUsageError("--query must not be empty")
    fields = parse_list(rank_fields, str, "--rank-fields") or None
    chunking = chunking_kwargs(long_documents, chunk_size, chunk_stride, chunk_aggregate)
    source = "<stdin>" if file == "-" else file
    documents: list[InputDocument] = read_documents(file, input_format)
    check_rank_fields(documents, fields, source)
    reranker = load_model_or_exit(
        model,
        device=device,
        dtype=dtype,
        max_length=max_length,
        max_batch_tokens=max_batch_tokens,
        family=family,
        backend=backend,
        compile=False,  # one query: compiling (10-25 s on a GPU) would not pay for itself
    )
    results = reranker.rank(
        query,
        [doc.value for doc in documents],
        top_k=top_k,
        instruction=instruction,
        normalize=normalize,
        rank_fields=fields,
        batch_size=len(documents),
        return_documents=False,
        **chunking,
    )
    rows = [
        {
            "rank": position,
            "index": result.index,
            "line": documents[result.index].line,
            "score": result.score,
            "document": documents[result.index].value,
            # With --long-documents chunk: the best window's character range in the scored text.
            **({} if result.span is None else {"span": list(result.span)}),
        }
        for position, result in enumerate(results, start=1)
    ]
    fmt = output_format or default_output_format()
    if fmt == "json":
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
    elif fmt == "jsonl":
        for row in rows:
            click.echo(json.dumps(row, ensure_ascii=False))
    else:
        click.echo(_table(rows, shutil.get_terminal_size((100, 24)).columns))
