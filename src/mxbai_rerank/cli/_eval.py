"""``mxbai-rerank eval``: first stage + reranking on a BEIR-format collection, with metrics."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ._common import (
    CliUsageError,
    OneLineErrorCommand,
    chunking_kwargs,
    chunking_options,
    handle_errors,
    load_model_or_exit,
    model_options,
    stderr_is_terminal,
)

__all__ = ["eval_command", "format_comparison"]

_EPILOG = """\b
Examples:
  mxbai-rerank eval -m mixedbread-ai/mxbai-rerank-base-v2 --dataset beir:scifact -o out/scifact
  mxbai-rerank eval -m ./my-model --dataset ./nfcorpus --split test --top-k 50
  mxbai-rerank eval --dataset ./fiqa --first-stage runs/splade.trec --instruction "Find financial answers"
  mxbai-rerank eval -m mixedbread-ai/mxbai-rerank-base-v1 --dataset ./long-docs --long-documents chunk

\b
DIR is a BEIR-format collection: corpus.jsonl (_id, title, text), queries.jsonl (_id, text)
and qrels/<split>.tsv (header, then query-id, corpus-id, score). beir:NAME downloads the public
BEIR zip into ~/.cache/mxbai-rerank/beir (or $MXBAI_RERANK_CACHE/beir) on first use.
The reranker sees each document as "title text". --output writes run.trec (reranked),
first_stage.trec and metrics.json (means, per-query values, timing, model and settings)."""

_LABELS = {"ndcg@10": "nDCG@10", "mrr@10": "MRR@10", "recall@100": "Recall@100"}


def format_comparison(first_stage: dict[str, float], reranked: dict[str, float]) -> str:
    """A metric table: first stage, reranked and the change."""
    lines = [f"{'metric':<12}{'first stage':>13}{'reranked':>11}{'change':>10}"]
    for metric, before in first_stage.items():
        after = reranked[metric]
        lines.append(f"{_LABELS.get(metric, metric):<12}{before:>13.4f}{after:>11.4f}{after - before:>+10.4f}")
    return "\n".join(lines)


@click.command("eval", cls=OneLineErrorCommand, epilog=_EPILOG)
@model_options(family=True, backend=True)
@click.option(
    "--dataset",
    "-d",
    required=True,
    metavar="DIR|beir:NAME",
    help="A BEIR-format collection directory, or beir:NAME (e.g. beir:scifact) to download it.",
)
@click.option(
    "--split",
    default="test",
    show_default=True,
    help="The qrels to evaluate against: qrels/<split>.tsv (test, dev...).",
)
@click.option(
    "--first-stage",
    default="bm25",
    show_default=True,
    metavar="bm25|RUN_FILE",
    help="The candidates to rerank: bm25 (BM25 over title + text, bm25s) or a TREC run file "
    "(qid Q0 docid rank score tag).",
)
@click.option(
    "--top-k",
    "-k",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="First-stage candidates reranked per query.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(file_okay=False),
    default=None,
    help="Directory to write run.trec, first_stage.trec and metrics.json to (created if missing).",
)
@click.option("--instruction", default=None, help="v2 models: an instruction prepended to each query.")
@click.option(
    "--max-queries", type=click.IntRange(min=1), default=None, help="Evaluate only the first N queries (quick checks)."
)
@chunking_options
@handle_errors
def eval_command(
    model: str,
    device: str,
    max_length: int | None,
    dtype: str,
    max_batch_tokens: int | None,
    family: str,
    backend: str | None,
    dataset: str,
    split: str,
    first_stage: str,
    top_k: int,
    output: str | None,
    instruction: str | None,
    max_queries: int | None,
    long_documents: str,
    chunk_size: int | None,
    chunk_stride: int | None,
    chunk_aggregate: str,
) -> None:
    """Evaluate a reranker on a BEIR-format collection: nDCG@10, MRR@10, Recall@100 before and after reranking."""
    from ..evaluation import evaluate, load_beir, read_trec_run, resolve_dataset

    progress = stderr_is_terminal()
    chunking = chunking_kwargs(long_documents, chunk_size, chunk_stride, chunk_aggregate)
    if output is not None and Path(output).exists() and not Path(output).is_dir():
        raise CliUsageError(f"--output {output!r} exists and is not a directory")
    # Everything that can fail on the user's input fails before the model loads.
    path, name = resolve_dataset(dataset, show_progress=progress)
    data = load_beir(path, split, name=name)
    if first_stage != "bm25":
        if not os.path.exists(first_stage):
            raise CliUsageError(f"--first-stage {first_stage!r}: no such run file (use bm25 or a TREC run file)")
        read_trec_run(first_stage)
    reranker = load_model_or_exit(
        model,
        device=device,
        dtype=dtype,
        max_length=max_length,
        max_batch_tokens=max_batch_tokens,
        family=family,
        backend=backend,
    )
    result = evaluate(
        reranker,
        data,
        first_stage=first_stage,
        top_k=top_k,
        instruction=instruction,
        max_queries=max_queries,
        output_dir=output,
        chunking=chunking,
        show_progress=progress,
    )
    info, timing = result.dataset, result.timing
    click.echo(
        f"{info['name']} ({info['split']}): {info['num_queries']} queries, {info['num_documents']} documents; "
        f"first stage {result.settings['first_stage']}, top {top_k}; "
        f"model {result.model['name']} ({result.model.get('family', '?')}, {result.model.get('device', '?')}, "
        f"{result.model.get('dtype', '?')})"
    )
    click.echo()
    click.echo(format_comparison(result.first_stage, result.reranked))
    click.echo()
    click.echo(
        f"reranked {timing['num_pairs']} pairs in {timing['rerank_s']:.1f} s: "
        f"{timing['queries_per_s']:.1f} queries/s, {timing['documents_per_s']:.1f} documents/s"
    )
    if output is not None:
        click.echo(f"wrote {Path(output) / 'run.trec'} and {Path(output) / 'metrics.json'}", err=True)
