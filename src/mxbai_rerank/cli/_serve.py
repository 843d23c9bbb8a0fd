"""``mxbai-rerank serve``: load a model and serve it over HTTP with uvicorn."""

from __future__ import annotations

import logging

import click

__all__ = ["serve"]

logger = logging.getLogger(__name__)

_ENV = "MXBAI_RERANK_"
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


@click.command("serve", context_settings={"show_default": True})
@click.option("--model", "-m", required=True, envvar=f"{_ENV}MODEL", show_envvar=True, help="Hub name or local path.")
@click.option("--host", default="127.0.0.1", envvar=f"{_ENV}HOST", show_envvar=True, help="Address to bind.")
@click.option("--port", default=8000, type=click.IntRange(0, 65535), envvar=f"{_ENV}PORT", show_envvar=True)
@click.option(
    "--api-key",
    default=None,
    envvar=f"{_ENV}API_KEY",
    show_envvar=True,
    help="Require 'Authorization: Bearer KEY' on every endpoint but /health and /metrics.",
)
@click.option(
    "--device", default=None, envvar=f"{_ENV}DEVICE", show_envvar=True, help="cuda, cpu, mps... [default: best]"
)
@click.option(
    "--dtype",
    default="auto",
    type=click.Choice(["auto", "float32", "bfloat16", "float16"]),
    envvar=f"{_ENV}DTYPE",
    show_envvar=True,
)
@click.option(
    "--max-length",
    type=click.IntRange(min=1),
    envvar=f"{_ENV}MAX_LENGTH",
    show_envvar=True,
    help="Most tokens of query plus document [default: the model's].",
)
@click.option(
    "--max-batch-tokens",
    type=click.IntRange(min=1),
    envvar=f"{_ENV}MAX_BATCH_TOKENS",
    show_envvar=True,
    help="Padded tokens per forward pass [default: 8192 on CPU, 65536 on CUDA].",
)
@click.option(
    "--max-client-batch-size",
    default=1000,
    type=click.IntRange(min=1),
    envvar=f"{_ENV}MAX_CLIENT_BATCH_SIZE",
    show_envvar=True,
    help="Most documents in one request.",
)
@click.option(
    "--max-concurrent-requests",
    default=512,
    type=click.IntRange(min=1),
    envvar=f"{_ENV}MAX_CONCURRENT_REQUESTS",
    show_envvar=True,
    help="Most rerank requests in flight; more are answered 429.",
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
)
@click.option("--access-log/--no-access-log", default=False, envvar=f"{_ENV}ACCESS_LOG", show_envvar=True)
def serve(
    model: str,
    host: str,
    port: int,
    api_key: str | None,
    device: str | None,
    dtype: str,
    max_length: int | None,
    max_batch_tokens: int | None,
    max_client_batch_size: int,
    max_concurrent_requests: int,
    served_model_name: tuple[str, ...],
    log_level: str,
    access_log: bool,
) -> None:
    """Serve a reranker over HTTP with the Mixedbread, Cohere and TEI rerank APIs."""
    from .._extras import MissingExtraError, require

    try:
        uvicorn = require("uvicorn", "server")
        from ..server import ServerSettings, create_app
    except MissingExtraError as exc:
        raise click.ClickException(str(exc)) from exc
    import mxbai_rerank

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if api_key is not None and not api_key:
        raise click.BadParameter("must not be empty", param_hint="--api-key")
    load_kwargs: dict[str, object] = {"device": device, "torch_dtype": dtype, "max_batch_tokens": max_batch_tokens}
    if max_length is not None:
        load_kwargs["max_length"] = max_length
    try:
        reranker = mxbai_rerank.load(model, **load_kwargs)
    except (mxbai_rerank.ModelLoadError, ValueError, OSError) as exc:
        raise click.ClickException(f"cannot load {model!r}: {exc}") from exc
    settings = ServerSettings(
        model_name=model,
        served_model_names=served_model_name,
        api_key=api_key,
        max_client_batch_size=max_client_batch_size,
        max_concurrent_requests=max_concurrent_requests,
    )
    app = create_app(reranker, settings)
    names = ", ".join(dict.fromkeys((model, *served_model_name)))
    shown_host = f"[{host}]" if ":" in host else host
    click.echo(
        f"mxbai-rerank serve: model {names} ({reranker.family}) on {reranker.device} in "
        f"{str(reranker.dtype).removeprefix('torch.')}, max_batch_tokens={reranker.max_batch_tokens}; "
        f"listening on http://{shown_host}:{port} ({'API key required' if api_key else 'no API key'})",
        err=True,
    )
    if host not in _LOOPBACK and not api_key:
        logger.warning("serving on %s without --api-key: anyone who can reach this address can use the model", host)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=access_log)
    uvicorn.Server(config).run()
