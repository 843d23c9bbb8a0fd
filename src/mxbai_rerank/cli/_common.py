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
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import click

from .._registry import DEFAULT_MODEL, available_families, describe_budget_defaults

# Nothing here imports torch or transformers at module level: ``mxbai-rerank --help``, every
# ``<subcommand> --help`` and every usage error must stay fast. Heavy imports live in the
# functions that need them.
if TYPE_CHECKING:
    from .._model import TransformerReranker

__all__ = [
    "BACKEND_CHOICES",
    "DEBUG_ENV",
    "DTYPE_CHOICES",
    "FAMILY_CHOICES",
    "HUB_CHECK_TIMEOUT_S",
    "INPUT_FORMAT_CHOICES",
    "MODEL_ENV",
    "CliError",
    "CliUsageError",
    "InputDocument",
    "OneLineErrorCommand",
    "check_model_source",
    "check_rank_fields",
    "chunking_kwargs",
    "chunking_options",
    "default_output_format",
    "first_line",
    "handle_errors",
    "input_format_option",
    "load_model_or_exit",
    "model_options",
    "one_line",
    "one_line_usage_error",
    "parse_list",
    "read_documents",
    "stderr_is_terminal",
]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

DEBUG_ENV = "MXBAI_RERANK_DEBUG"
MODEL_ENV = "MXBAI_RERANK_MODEL"
DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")
# The model families ``mxbai_rerank.load(family=...)`` accepts, plus "auto" (detect from the
# config). The registry imports no torch, so ``--help`` stays fast.
FAMILY_CHOICES = ("auto", *available_families())
INPUT_FORMAT_CHOICES = ("auto", "text", "jsonl")
# The engine's backends by name (``_engine._backends.BACKENDS``, which imports torch, so it is
# listed here; a test keeps the two equal).
BACKEND_CHOICES = ("int8", "onnx", "onnx-int8", "packed", "torch")
# Seconds to wait for the Hugging Face hub to answer before calling it unreachable.
HUB_CHECK_TIMEOUT_S = 3.0


class CliError(click.ClickException):
    """A user error, shown as one ``Error: ...`` line; exit status 1."""


class CliUsageError(CliError):
    """A bad option value found after parsing, shown as one ``Error: ...`` line; exit status 2."""

    exit_code = 2


def one_line_usage_error(exc: click.UsageError, ctx: click.Context) -> CliUsageError:
    """``exc`` as one ``Error:`` line with a pointer to ``--help`` instead of click's usage block."""
    message = " ".join(exc.format_message().split())
    return CliUsageError(f"{message} (see '{ctx.command_path} --help')")


class OneLineErrorCommand(click.Command):
    """A command whose argument errors are one line (with a pointer to ``--help``), exit status 2."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            raise one_line_usage_error(exc, ctx) from exc

    def invoke(self, ctx: click.Context) -> Any:
        # A usage error found by the command body (a ``CliUsageError``, or a ``click.BadParameter``
        # from a callback) is one line too, with the same pointer to ``--help``.
        try:
            return super().invoke(ctx)
        except CliUsageError as exc:
            if "--help')" not in exc.message:
                exc.message = f"{exc.message} (see '{ctx.command_path} --help')"
            raise
        except click.UsageError as exc:
            raise one_line_usage_error(exc, exc.ctx or ctx) from exc


def _expected_errors() -> tuple[type[BaseException], ...]:
    import torch

    from .. import ModelLoadError, NonFiniteScoreError
    from .._extras import MissingExtraError

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


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (its type name when it has none)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def first_line(text: object) -> str:
    """The first non-blank line of a (multi-line) message, e.g. a Ray error's headline."""
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


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
            raise CliError(one_line(exc)) from exc

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
    if target.type == "cuda":
        if not torch.cuda.is_available():
            raise CliError(f"--device {device}: CUDA is not available on this machine (use --device cpu or auto)")
        count = torch.cuda.device_count()
        if target.index is not None and target.index >= count:
            raise CliError(f"--device {device}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    elif target.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise CliError(f"--device {device}: Apple MPS is not available on this machine (use --device cpu or auto)")
    elif target.type != "cpu":
        raise CliError(f"--device {device}: unsupported device type (use cpu, cuda, cuda:N, mps or auto)")


def _is_true(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _looks_like_path(name: str) -> bool:
    # Hub ids are ``name`` or ``org/name``; anything else names a local path.
    return name.startswith(("/", "./", "../", "~", ".\\", "\\")) or name.count("/") > 1 or "\\" in name


def _hub_offline() -> bool:
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    return _is_true(env) or bool(constants.HF_HUB_OFFLINE)


def _in_hub_cache(model: str) -> bool:
    """Whether the hub cache holds a ``config.json`` of ``model`` (its default revision)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(model, "config.json"), str)
    except Exception:  # an invalid repo id: loading reports it
        return False


def _hub_unreachable(endpoint: str, timeout: float) -> str | None:
    """``None`` when ``endpoint`` answers an HTTP request within ``timeout`` s, else why not.

    Any HTTP answer counts (the proxies and certificates of the hub client apply); name
    resolution has no timeout of its own, so the request runs on a thread that is abandoned
    when it takes too long.
    """
    from huggingface_hub.utils import get_session

    outcome: list[str | None] = []

    def probe() -> None:
        try:
            get_session().head(endpoint, timeout=timeout)
            outcome.append(None)
        except Exception as exc:
            outcome.append(one_line(exc))

    thread = threading.Thread(target=probe, name="mxbai-rerank-hub-check", daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    return outcome[0] if outcome else f"no answer within {timeout:g} s"


@contextmanager
def _offline_hub() -> Iterator[None]:
    """Make the hub client (and transformers through it) use only its cache, for a block."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def check_model_source(model: str) -> bool:
    """Before loading a model that is not a local directory: say so on stderr, and fail fast.

    Without a network the hub client retries for half a minute before it gives up; this asks
    the hub once, with a :data:`HUB_CHECK_TIMEOUT_S` timeout, and honours ``HF_HUB_OFFLINE``.
    Returns ``True`` when the model must load from the hub cache only (the hub is unreachable
    but the cache holds the model); raises :class:`CliError` when it cannot load at all.
    """
    if Path(os.path.expanduser(model)).exists() or _looks_like_path(model):
        return False  # a local directory (or a bad path, which loading reports)
    from huggingface_hub import constants

    cached = _in_hub_cache(model)
    if _hub_offline():
        if not cached:
            raise CliError(
                f"{model!r} is not a local model directory and not in the Hugging Face cache "
                f"({constants.HF_HUB_CACHE}), and HF_HUB_OFFLINE is set: pass a local model directory, "
                "or unset HF_HUB_OFFLINE to download it"
            )
        click.echo(f"loading {model} from the Hugging Face cache (offline mode)", err=True)
        return False
    endpoint = constants.ENDPOINT
    problem = _hub_unreachable(endpoint, HUB_CHECK_TIMEOUT_S)
    if problem is not None:
        if not cached:
            raise CliError(
                f"cannot download {model!r}: the Hugging Face hub ({endpoint}) is unreachable ({problem}), "
                "and it is neither a local model directory nor in the Hugging Face cache; check the network, "
                "or pass a local model directory"
            )
        click.echo(
            f"the Hugging Face hub ({endpoint}) is unreachable; loading {model} from the Hugging Face cache", err=True
        )
        return True
    click.echo(f"loading {model} from the Hugging Face hub ({endpoint}); the first download may take a while", err=True)
    return False


def load_model_or_exit(
    model: str,
    *,
    device: str | None = None,
    dtype: str | None = None,
    max_length: int | None = None,
    max_batch_tokens: int | None = None,
    family: str | None = None,
    backend: str | None = None,
    **kwargs: Any,
) -> TransformerReranker:
    """``mxbai_rerank.load(...)``, or a :class:`CliError` saying in one line why it failed.

    ``device``, ``dtype`` and ``family`` take the options' values (``"auto"`` means the
    library's choice). A model that is not a local directory is announced on stderr first.
    """
    from huggingface_hub.utils import logging as hub_logging

    from .. import ModelLoadError, load
    from .._extras import MissingExtraError

    _check_device(device)
    offline = check_model_source(model)
    # The hub client logs a warning per retry when offline; the failure is reported below.
    hub_level = hub_logging.get_verbosity()
    hub_logging.set_verbosity_error()
    try:
        with _offline_hub() if offline else nullcontext():
            return load(
                model,
                family=None if family in (None, "auto") else family,
                device=None if device in (None, "auto") else device,
                torch_dtype=None if dtype in (None, "auto") else dtype,
                # Unset: the family's default (None would mean the model's whole window).
                **({} if max_length is None else {"max_length": max_length}),
                max_batch_tokens=max_batch_tokens,
                disable_transformers_warnings=True,
                **({} if backend in (None, "auto") else {"backend": backend}),
                **kwargs,
            )
    except (ModelLoadError, MissingExtraError, OSError, ValueError) as exc:
        if os.environ.get(DEBUG_ENV):
            raise
        message = one_line(exc)
        raise CliError(message if model in message else f"cannot load model {model!r}: {message}") from exc
    finally:
        hub_logging.set_verbosity(hub_level)


def _envvar(prefix: str | None, name: str) -> dict[str, Any]:
    return {} if prefix is None else {"envvar": f"{prefix}{name}", "show_envvar": True}


def model_options(
    *,
    dtype: bool = True,
    max_batch_tokens: bool = True,
    family: bool = False,
    backend: bool = False,
    env_prefix: str | None = None,
    model_required: bool = False,
) -> Callable[[F], F]:
    """``--model/-m``, ``--device``, ``--max-length`` and, unless disabled, ``--dtype`` and
    ``--max-batch-tokens`` (commands that take lists of those define their own).

    ``family``: also ``--family`` (the command then takes a ``family`` argument).
    ``backend``: also ``--backend`` (the command then takes a ``backend`` argument, ``None`` when unset).
    ``env_prefix``: every option also reads ``<prefix><NAME>`` from the environment (e.g.
    ``MXBAI_RERANK_DEVICE``); ``--model`` always reads ``MXBAI_RERANK_MODEL``.
    ``model_required``: ``--model`` has no default model.
    """

    def decorate(func: F) -> F:
        model_default: dict[str, Any] = (
            {"required": True} if model_required else {"default": DEFAULT_MODEL, "show_default": True}
        )
        options = [
            click.option(
                "--model",
                "-m",
                "model",
                envvar=MODEL_ENV,
                show_envvar=True,
                help="Hugging Face hub id (e.g. mixedbread-ai/mxbai-rerank-base-v2) or local model directory.",
                **model_default,
            ),
            click.option(
                "--device",
                default="auto",
                show_default=True,
                help="cpu, cuda, cuda:N or mps; auto picks CUDA, then MPS, then the CPU.",
                **_envvar(env_prefix, "DEVICE"),
            ),
            click.option(
                "--max-length",
                type=click.IntRange(min=1),
                default=None,
                help="Most tokens of query + document; longer pairs are truncated "
                "[default: v1 the tokenizer's limit (512), v2 8192].",
                **_envvar(env_prefix, "MAX_LENGTH"),
            ),
        ]
        if dtype:
            options.append(
                click.option(
                    "--dtype",
                    type=click.Choice(DTYPE_CHOICES),
                    default="auto",
                    show_default=True,
                    help="Weights and activations dtype; auto: the checkpoint's bf16/fp16 on CUDA, bf16 on CPUs "
                    "with native bf16 (AVX512-BF16, AMX), float32 otherwise.",
                    **_envvar(env_prefix, "DTYPE"),
                )
            )
        if max_batch_tokens:
            options.append(
                click.option(
                    "--max-batch-tokens",
                    type=click.IntRange(min=1),
                    default=None,
                    help=f"Most padded tokens in one forward pass [default: {describe_budget_defaults()}].",
                    **_envvar(env_prefix, "MAX_BATCH_TOKENS"),
                )
            )
        if family:
            options.append(
                click.option(
                    "--family",
                    type=click.Choice(FAMILY_CHOICES),
                    default="auto",
                    show_default=True,
                    help="Model family; auto detects it from the model's config. Force it for a renamed or "
                    "re-saved copy that is not recognised.",
                    **_envvar(env_prefix, "FAMILY"),
                )
            )
        if backend:
            options.append(
                click.option(
                    "--backend",
                    type=click.Choice(BACKEND_CHOICES),
                    default=None,
                    help="How the model runs: torch (padded batches, prefix reuse), packed (varlen, GPUs), onnx "
                    "(an exported graph in ONNX Runtime), int8 (int8 matrix products in PyTorch on the CPU, "
                    "per-token activation scales), onnx-int8 (an int8-quantized ONNX graph; exported and "
                    "cached once) [default: packed on CUDA where a varlen kernel runs, onnx for a folder written "
                    "by 'convert --to onnx', torch otherwise].",
                    **_envvar(env_prefix, "BACKEND"),
                )
            )
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def chunking_options(func: F) -> F:
    """``--long-documents``, ``--chunk-size``, ``--chunk-stride`` and ``--chunk-aggregate`` (the
    command then takes those four arguments; :func:`chunking_kwargs` turns them into options)."""
    options = [
        click.option(
            "--long-documents",
            type=click.Choice(["truncate", "chunk"]),
            default="truncate",
            show_default=True,
            help="Documents longer than the window: cut them (as upstream), or score overlapping windows "
            "and aggregate.",
        ),
        click.option(
            "--chunk-size",
            type=click.IntRange(min=1),
            default=None,
            help="With chunk: document tokens per window [default: what fits next to the query].",
        ),
        click.option(
            "--chunk-stride",
            type=click.IntRange(min=1),
            default=None,
            help="With chunk: tokens between window starts, smaller than the window [default: 3/4 of it].",
        ),
        click.option(
            "--chunk-aggregate",
            type=click.Choice(["max", "first", "mean"]),
            default="max",
            show_default=True,
            help="With chunk: a document's score from its windows' scores.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def chunking_kwargs(
    long_documents: str, chunk_size: int | None, chunk_stride: int | None, chunk_aggregate: str
) -> dict[str, Any]:
    """The library's keyword arguments for the chunking options, or a one-line usage error."""
    from .._chunking import Chunking

    try:
        Chunking.from_options(long_documents, chunk_size, chunk_stride, chunk_aggregate)
    except ValueError as exc:
        message = str(exc).replace("chunk_", "--chunk-").replace("long_documents", "--long-documents")
        raise CliUsageError(message) from None
    if long_documents == "truncate":
        return {}
    return {
        "long_documents": "chunk",
        "chunk_size": chunk_size,
        "chunk_stride": chunk_stride,
        "chunk_aggregate": chunk_aggregate,
    }


def input_format_option(func: F) -> F:
    """``--input-format auto|text|jsonl`` for commands that read documents with :func:`read_documents`."""
    return click.option(
        "--input-format",
        type=click.Choice(INPUT_FORMAT_CHOICES),
        default="auto",
        show_default=True,
        help="text: one document per line; jsonl: one JSON string or object per line; "
        "auto: jsonl when the first line is a JSON object or string, text otherwise.",
    )(func)


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
    detected = input_format == "auto"
    if detected:
        input_format = "jsonl" if _looks_like_jsonl(lines[0][1]) else "text"
    if input_format == "text":
        return [InputDocument(lineno, text) for lineno, text in lines]
    # Auto-detection looks at the first line only: a text file whose first line starts with
    # "{" or a quote is read as JSON lines, so its errors say how to read it as text.
    hint = (
        " (the first line looked like JSON, so the input was read as JSON lines; "
        "use --input-format text for plain text)"
        if detected
        else ""
    )
    documents = []
    for lineno, text in lines:
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise CliError(f"{name}:{lineno}: invalid JSON ({exc}){hint}") from None
        if not isinstance(value, (str, dict)):
            raise CliError(f"{name}:{lineno}: expected a JSON string or object, got {type(value).__name__}{hint}")
        documents.append(InputDocument(lineno, value))
    return documents


def check_rank_fields(documents: Sequence[InputDocument], rank_fields: list[str] | None, name: str) -> None:
    """Fail when ``rank_fields`` cannot apply: no document is a JSON object, or one lacks a field.

    Strings (text lines, JSON strings) are scored whole; ``--rank-fields`` on an input with no
    JSON object at all would be ignored without a word, so it is refused.
    """
    if not rank_fields:
        return
    from .._documents import document_text

    objects = [doc for doc in documents if isinstance(doc.value, dict)]
    if not objects:
        raise CliUsageError(
            f"--rank-fields {','.join(rank_fields)}: {name} has no JSON objects (its documents are plain strings, "
            "scored whole); --rank-fields picks fields of JSON-object documents, so leave it out"
        )
    for doc in objects:
        for field in rank_fields:
            try:
                document_text(doc.value, [field])
            except ValueError:
                raise CliError(f"{name}:{doc.line}: field {field!r} (from --rank-fields) not found") from None
