"""Helpers shared by the subcommands: one-line errors, model loading, reading documents.

Error policy: a mistake of the user (a bad option, an unreadable file, a model directory that
is not a model) ends the command with exactly one ``Error: ...`` line on stderr and a
non-zero exit status, never a traceback. Set ``MXBAI_RERANK_DEBUG=1`` to see the traceback.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from .._model import TransformerReranker

__all__ = [
    "DEBUG_ENV",
    "DTYPE_CHOICES",
    "MODEL_ENV",
    "CliError",
    "CliUsageError",
    "InputDocument",
    "OneLineErrorCommand",
    "check_rank_fields",
    "default_output_format",
    "handle_errors",
    "load_model_or_exit",
    "model_options",
    "parse_list",
    "read_documents",
    "stderr_is_terminal",
]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

DEBUG_ENV = "MXBAI_RERANK_DEBUG"
MODEL_ENV = "MXBAI_RERANK_MODEL"
DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")


class CliError(click.ClickException):
    """A user error, shown as one ``Error: ...`` line; exit status 1."""


class CliUsageError(CliError):
    """A bad option value found after parsing, shown as one ``Error: ...`` line; exit status 2."""

    exit_code = 2


class OneLineErrorCommand(click.Command):
    """A command whose argument errors are one line (with a pointer to ``--help``), exit status 2."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            message = exc.format_message().replace("\n", " ")
            raise CliUsageError(f"{message} (see '{ctx.command_path} --help')") from exc


def _expected_errors() -> tuple[type[BaseException], ...]:
    import torch

    from .._extras import MissingExtraError
    from .._model import NonFiniteScoreError
    from .._runtime import ModelLoadError

    # ValueError/TypeError: the library's argument checks (e.g. an instruction for a v1 model).
    return (
        ModelLoadError,
        MissingExtraError,
        NonFiniteScoreError,
        torch.cuda.OutOfMemoryError,
        OSError,
        ValueError,
        TypeError,
    )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def handle_errors(func: F) -> F:
    """Turn expected exceptions into one ``Error:`` line on stderr and exit status 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except click.ClickException:
            raise
        except BrokenPipeError:
            # The reader went away (``| head``): stop quietly, as Unix tools do.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(0)
        except _expected_errors() as exc:
            if os.environ.get(DEBUG_ENV):
                raise
            raise CliError(_one_line(exc)) from exc

    return wrapper  # type: ignore[return-value]


def stderr_is_terminal() -> bool:
    """Whether progress bars (drawn on stderr) would be seen."""
    stream = sys.stderr
    return bool(getattr(stream, "isatty", None) and stream.isatty())


def default_output_format(stream: IO[str] | None = None) -> str:
    """``table`` for a terminal, ``jsonl`` for a pipe or file."""
    stream = stream or sys.stdout
    return "table" if getattr(stream, "isatty", None) and stream.isatty() else "jsonl"


def parse_list(value: str | None, convert: Callable[[str], T], name: str) -> list[T]:
    """``"a,b"`` -> ``[convert("a"), convert("b")]``, a :class:`CliUsageError` naming the option otherwise."""
    if value is None:
        return []
    items = [item.strip() for item in value.split(",")]
    if not all(items):
        raise CliUsageError(f"{name}: empty item in {value!r}")
    try:
        return [convert(item) for item in items]
    except (ValueError, TypeError) as exc:
        raise CliUsageError(f"{name}: invalid value in {value!r} ({exc})") from exc


# -- model loading ------------------------------------------------------------------------
def _check_device(device: str | None) -> None:
    if device in (None, "auto"):
        return
    import torch

    try:
        target = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise CliError(f"invalid --device {device!r} (use cpu, cuda, cuda:N, mps or auto)") from exc
    if target.type == "cuda" and not torch.cuda.is_available():
        raise CliError(f"--device {device}: CUDA is not available on this machine")
    if target.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise CliError(f"--device {device}: Apple MPS is not available on this machine")


def load_model_or_exit(
    model: str,
    *,
    device: str | None = None,
    dtype: str | None = None,
    max_length: int | None = None,
    max_batch_tokens: int | None = None,
    **kwargs: Any,
) -> TransformerReranker:
    """``mxbai_rerank.load(...)``, or a :class:`CliError` saying in one line why it failed."""
    from huggingface_hub.utils import logging as hub_logging

    from .._extras import MissingExtraError
    from .._loader import load
    from .._runtime import ModelLoadError

    _check_device(device)
    # The hub client logs a warning per retry when offline; the failure is reported below.
    hub_level = hub_logging.get_verbosity()
    hub_logging.set_verbosity_error()
    try:
        return load(
            model,
            device=None if device in (None, "auto") else device,
            torch_dtype=None if dtype in (None, "auto") else dtype,
            max_length=max_length,
            max_batch_tokens=max_batch_tokens,
            disable_transformers_warnings=True,
            **kwargs,
        )
    except (ModelLoadError, MissingExtraError, OSError, ValueError) as exc:
        if os.environ.get(DEBUG_ENV):
            raise
        message = _one_line(exc)
        raise CliError(message if model in message else f"cannot load model {model!r}: {message}") from exc
    finally:
        hub_logging.set_verbosity(hub_level)


def model_options(*, dtype: bool = True, max_batch_tokens: bool = True) -> Callable[[F], F]:
    """``--model/-m``, ``--device``, ``--max-length`` and, unless disabled, ``--dtype`` and
    ``--max-batch-tokens`` (commands that take lists of those define their own)."""

    def decorate(func: F) -> F:
        options = [
            click.option(
                "--model",
                "-m",
                "model",
                envvar=MODEL_ENV,
                show_envvar=True,
                default="mixedbread-ai/mxbai-rerank-base-v2",
                show_default=True,
                help="Hugging Face model id or local model directory.",
            ),
            click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N, mps or auto."),
            click.option(
                "--max-length",
                type=click.IntRange(min=1),
                default=None,
                help="Most tokens of query + document (default: the model's).",
            ),
        ]
        if dtype:
            options.append(
                click.option(
                    "--dtype",
                    type=click.Choice(DTYPE_CHOICES),
                    default="auto",
                    show_default=True,
                    help="Weights and activations dtype; auto picks bf16 on GPUs and on CPUs with native bf16.",
                )
            )
        if max_batch_tokens:
            options.append(
                click.option(
                    "--max-batch-tokens",
                    type=click.IntRange(min=1),
                    default=None,
                    help="Padded tokens per forward pass (default: 8192 on CPU, 65536 on CUDA).",
                )
            )
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


# -- reading documents --------------------------------------------------------------------
@dataclass
class InputDocument:
    """A document read from a file: its value (a string or a JSON object) and its 1-based line."""

    line: int
    value: str | dict[str, Any]


def _decode_lines(stream: IO[bytes], name: str) -> list[tuple[int, str]]:
    lines = []
    for lineno, raw in enumerate(stream, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise CliError(f"{name}:{lineno}: not UTF-8 text") from None
        if lineno == 1:
            text = text.removeprefix("\ufeff")
        text = text.rstrip("\r\n")
        if text.strip():
            lines.append((lineno, text))
    return lines


def _looks_like_jsonl(first: str) -> bool:
    stripped = first.lstrip()
    if stripped.startswith("{"):
        return True
    if stripped.startswith('"'):
        try:
            return isinstance(json.loads(stripped), str)
        except ValueError:
            return False
    return False


def read_documents(source: str, input_format: str = "auto") -> list[InputDocument]:
    """Documents from a file (``-`` for stdin): one per non-blank line.

    ``input_format``: ``text`` (each line is a document), ``jsonl`` (each line is a JSON string
    or object), or ``auto`` (``jsonl`` when the first line is a JSON object or string).
    """
    name = "<stdin>" if source == "-" else source
    if source == "-" and sys.stdin.isatty():
        click.echo("reading documents from stdin, one per line (end with Ctrl-D)", err=True)
    try:
        if source == "-":
            lines = _decode_lines(sys.stdin.buffer, name)
        else:
            with open(source, "rb") as handle:
                lines = _decode_lines(handle, name)
    except OSError as exc:
        raise CliError(f"cannot read {name}: {exc.strerror or exc}") from exc
    if not lines:
        raise CliError(f"{name}: no documents (the input is empty)")
    if input_format == "auto":
        input_format = "jsonl" if _looks_like_jsonl(lines[0][1]) else "text"
    if input_format == "text":
        return [InputDocument(lineno, text) for lineno, text in lines]
    documents = []
    for lineno, text in lines:
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise CliError(f"{name}:{lineno}: invalid JSON ({exc})") from None
        if not isinstance(value, (str, dict)):
            raise CliError(f"{name}:{lineno}: expected a JSON string or object, got {type(value).__name__}")
        documents.append(InputDocument(lineno, value))
    return documents


def check_rank_fields(documents: Sequence[InputDocument], rank_fields: list[str] | None, name: str) -> None:
    """Fail with the line of the first JSON object that lacks one of ``rank_fields``."""
    if not rank_fields:
        return
    from .._documents import document_text

    for doc in documents:
        if not isinstance(doc.value, dict):
            continue
        for field in rank_fields:
            try:
                document_text(doc.value, [field])
            except ValueError:
                raise CliError(f"{name}:{doc.line}: field {field!r} (from --rank-fields) not found") from None
