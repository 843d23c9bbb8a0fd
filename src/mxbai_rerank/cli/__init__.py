"""The ``mxbai-rerank`` command: one entry point, one module per subcommand.

Subcommands are imported only when run, so ``mxbai-rerank --help`` stays fast and an
optional extra (server, eval, ray) is needed only by the subcommand that uses it. No module
of this package imports torch or transformers at import time: the commands import them in
their bodies, so help and usage errors answer at once.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any

import click

from ._common import CliUsageError, one_line_usage_error

__all__ = ["main"]

# name -> (module inside this package, attribute, one-line help)
_COMMANDS: dict[str, tuple[str, str, str]] = {
    "rank": ("_rank", "rank", "Rerank documents from a file or stdin for one query."),
    "eval": ("_eval", "eval_command", "Evaluate a reranker on a BEIR-format collection."),
    "bench": ("_bench", "bench", "Measure documents/s, latency and memory of a model."),
    "serve": ("_serve", "serve", "Serve a reranker over HTTP (Mixedbread, Cohere and TEI APIs)."),
    "batch": ("_batch", "batch", "Score millions of pairs on a Ray cluster into Parquet."),
    "train": ("_train", "train", "Fine-tune a reranker on your own data (GRPO, contrastive, preference)."),
    "convert": ("_convert", "convert", "Convert a reranker to a sequence-classification or ONNX checkpoint."),
}

# click >= 8.2 shows the help of a group called without arguments by raising this usage error.
_NO_ARGS_IS_HELP: tuple[type[BaseException], ...] = tuple(
    cls for cls in [getattr(click.exceptions, "NoArgsIsHelpError", None)] if cls is not None
)


class _LazyGroup(click.Group):
    """Imports a subcommand's module only when that subcommand runs; usage errors are one line."""

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

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except _NO_ARGS_IS_HELP:
            raise
        except click.UsageError as exc:
            raise one_line_usage_error(exc, ctx) from exc

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else ""
        if name and name not in _COMMANDS and not name.startswith("-"):
            close = difflib.get_close_matches(name, _COMMANDS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise CliUsageError(
                f"no such command {name!r}; {hint}commands: {', '.join(sorted(_COMMANDS))} "
                f"(see '{ctx.command_path} --help')"
            )
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:
            raise one_line_usage_error(exc, ctx) from exc


@click.group(name="mxbai-rerank", cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mxbai-rerank")
def main(**_: Any) -> None:
    """Fast rerankers for Mixedbread's mxbai-rerank models (v1 and v2).

    Run 'mxbai-rerank COMMAND --help' for a command's options and examples.
    """
