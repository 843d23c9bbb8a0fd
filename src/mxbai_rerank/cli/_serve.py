"""``mxbai-rerank serve``: load a model and serve it over HTTP with uvicorn."""

from __future__ import annotations

import logging

import click

from ._common import CliUsageError, OneLineErrorCommand, handle_errors, load_model_or_exit, model_options

__all__ = ["serve"]

logger = logging.getLogger(__name__)

_ENV = "MXBAI_RERANK_"
_LOOPBACK = ("127.0.0.1", "localhost", "::1")

_EPILOG = """\b
Examples:
  mxbai-rerank serve -m mixedbread-ai/mxbai-rerank-base-v2 --api-key secret
  mxbai-rerank serve -m ./my-model --device cuda --host 0.0.0.0 --port 8080 --api-key "$KEY"
  MXBAI_RERANK_MODEL=./my-model MXBAI_RERANK_PORT=9000 mxbai-rerank serve --served-model-name rerank
  curl -H 'Authorization: Bearer secret' localhost:8000/v1/reranking -d '{"query": "q", "input": ["a", "b"]}'

\b
Limits: bodies over --payload-limit get 413, a text over --max-text-chars 413, headers or a
body slower than --header-timeout / --body-timeout 408, more than --max-concurrent-requests
429; after SIGTERM requests in flight get --graceful-shutdown-timeout seconds, new ones 503.

\b
Endpoints: POST /v1/reranking (Mixedbread), /v2/rerank and /v1/rerank (Cohere, Jina),
/rerank (TEI); GET /v1/models, /health (200 once the warm-up pass succeeded), /metrics
(Prometheus) and /docs (OpenAPI, public). Needs the [server] extra: pip install 'mxbai-rerank[server]'."""


@click.command("serve", cls=OneLineErrorCommand, epilog=_EPILOG, context_settings={"show_default": True})
@model_options(family=True, backend=True, env_prefix=_ENV, model_required=True)
@click.option(
    "--compile/--no-compile",
    "compile_model",
    default=None,
    envvar=f"{_ENV}COMPILE",
    show_envvar=True,
    help="torch.compile the model's layers at startup (packed backend: CUDA with a varlen kernel, or "
    "--backend packed); 10-25 s once on a GPU, then about a third less GPU time per request. Default: on where "
    "requests run packed on CUDA.",
)
@click.option("--host", default="127.0.0.1", envvar=f"{_ENV}HOST", show_envvar=True, help="Address to bind.")
@click.option(
    "--port",
    default=8000,
    type=click.IntRange(0, 65535),
    envvar=f"{_ENV}PORT",
    show_envvar=True,
    help="TCP port to listen on (0: any free port).",
)
@click.option(
    "--api-key",
    default=None,
    envvar=f"{_ENV}API_KEY",
    show_envvar=True,
    help="Require 'Authorization: Bearer KEY' on every endpoint but /health, /metrics and the docs.",
)
@click.option(
    "--max-client-batch-size",
    default=1000,
    type=click.IntRange(min=1),
    envvar=f"{_ENV}MAX_CLIENT_BATCH_SIZE",
    show_envvar=True,
    help="Most documents in one request; more are answered 413.",
)
@click.option(
    "--max-concurrent-requests",
    default=512,
    type=click.IntRange(min=1),
    envvar=f"{_ENV}MAX_CONCURRENT_REQUESTS",
    show_envvar=True,
    help="Most rerank requests in flight (a request counts once its whole body arrived); more are answered 429.",
)
@click.option(
    "--payload-limit",
    default=2_000_000,
    type=click.IntRange(min=1),
    envvar=f"{_ENV}PAYLOAD_LIMIT",
    show_envvar=True,
    help="Most bytes of a request body; more are answered 413 before the body is read.",
)
@click.option(
    "--max-text-chars",
    default=200_000,
    type=click.IntRange(min=1),
    envvar=f"{_ENV}MAX_TEXT_CHARS",
    show_envvar=True,
    help="Most characters of one text (query, document or object field); more are answered 413.",
)
@click.option(
    "--header-timeout",
    default=10.0,
    type=click.FloatRange(min=0, min_open=True),
    envvar=f"{_ENV}HEADER_TIMEOUT",
    show_envvar=True,
    help="Seconds a client may take to send a request's headers; then 408 and the connection closes.",
)
@click.option(
    "--body-timeout",
    default=30.0,
    type=click.FloatRange(min=0, min_open=True),
    envvar=f"{_ENV}BODY_TIMEOUT",
    show_envvar=True,
    help="Seconds a client may take to send a request's body; then 408 and the connection closes.",
)
@click.option(
    "--graceful-shutdown-timeout",
    default=30.0,
    type=click.FloatRange(min=0),
    envvar=f"{_ENV}GRACEFUL_SHUTDOWN_TIMEOUT",
    show_envvar=True,
    help="Seconds after SIGTERM that requests in flight get to finish; then they are answered 503.",
)
@click.option(
    "--served-model-name",
    multiple=True,
    envvar=f"{_ENV}SERVED_MODEL_NAME",
    show_envvar=True,
    help="Another model id clients may send (repeatable; space-separated in the variable).",
)
@click.option(
    "--log-level",
    default="info",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    envvar=f"{_ENV}LOG_LEVEL",
    show_envvar=True,
    help="Log level of the server and uvicorn.",
)
@click.option(
    "--access-log/--no-access-log",
    default=False,
    envvar=f"{_ENV}ACCESS_LOG",
    show_envvar=True,
    help="Log one line per HTTP request.",
)
@handle_errors
def serve(
    model: str,
    device: str,
    max_length: int | None,
    dtype: str,
    max_batch_tokens: int | None,
    family: str,
    backend: str | None,
    compile_model: bool | None,
    host: str,
    port: int,
    api_key: str | None,
    max_client_batch_size: int,
    max_concurrent_requests: int,
    payload_limit: int,
    max_text_chars: int,
    header_timeout: float,
    body_timeout: float,
    graceful_shutdown_timeout: float,
    served_model_name: tuple[str, ...],
    log_level: str,
    access_log: bool,
) -> None:
    """Serve a reranker over HTTP with the Mixedbread, Cohere and TEI rerank APIs."""
    from .._extras import require

    if api_key is not None and not api_key:
        raise CliUsageError("--api-key must not be empty")
    # A missing extra (MissingExtraError) is one line, before the model loads.
    require("uvicorn", "server")
    from ..server import ServerSettings, create_app
    from ..server import serve as serve_app

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    reranker = load_model_or_exit(
        model,
        device=device,
        dtype=dtype,
        max_length=max_length,
        max_batch_tokens=max_batch_tokens,
        family=family,
        backend=backend,
        compile=compile_model,
    )
    settings = ServerSettings(
        model_name=model,
        served_model_names=served_model_name,
        api_key=api_key,
        max_client_batch_size=max_client_batch_size,
        max_concurrent_requests=max_concurrent_requests,
        payload_limit=payload_limit,
        max_text_chars=max_text_chars,
        header_timeout=header_timeout,
        body_timeout=body_timeout,
        graceful_shutdown_timeout=graceful_shutdown_timeout,
    )
    app = create_app(reranker, settings)
    info = reranker.info()
    names = ", ".join(dict.fromkeys((model, *served_model_name)))
    shown_host = f"[{host}]" if ":" in host else host
    click.echo(
        f"mxbai-rerank serve: model {names} ({info.family}) on {info.device} in {info.dtype}, "
        f"max_batch_tokens={info.max_batch_tokens}; "
        f"listening on http://{shown_host}:{port} ({'API key required' if api_key else 'no API key'})",
        err=True,
    )
    if host not in _LOOPBACK and not api_key:
        logger.warning("serving on %s without --api-key: anyone who can reach this address can use the model", host)
    serve_app(app, host=host, port=port, log_level=log_level, access_log=access_log)
