"""The ``mxbai-rerank`` command: one entry point, one module per subcommand.

Subcommands are imported only when run, so ``mxbai-rerank --help`` stays fast and an
optional extra (server, eval, ray) is needed only by the subcommand that uses it.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

__all__ = ["main"]

# name -> (module inside this package, attribute, one-line help)
_COMMANDS: dict[str, tuple[str, str, str]] = {
    "rank": ("_rank", "rank", "Rerank documents from a file or stdin for one query."),
    "eval": ("_eval", "eval_command", "Evaluate a reranker on a BEIR-format collection."),
    "bench": ("_bench", "bench", "Measure documents/s, latency and memory of a model."),
    "serve": ("_serve", "serve", "Serve a reranker over HTTP (Mixedbread, Cohere and TEI APIs)."),
    "batch": ("_batch", "batch", "Score millions of pairs on a Ray cluster into Parquet."),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in _COMMANDS:
            return None
        module, attr, _ = _COMMANDS[cmd_name]
        return getattr(importlib.import_module(f"{__name__}.{module}"), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, _COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mxbai-rerank")
def main(**_: Any) -> None:
    """Fast rerankers for Mixedbread's mxbai-rerank models (v1 and v2)."""
