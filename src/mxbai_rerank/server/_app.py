"""The FastAPI application: three rerank API shapes over one dynamic-batching scheduler.

Request path of a rerank call (``_Gate``, an ASGI middleware, then the endpoint):

1. request id and API key (401);
2. the body: its declared size (413 before a byte is read), then read within
   ``body_timeout`` seconds (408) and at most ``payload_limit`` bytes (413), then parsed as
   strict JSON whatever the ``Content-Type`` (400/413 naming the field, see ``_body``);
3. only now, with a complete and valid body, admission: 503 while draining, 429 past
   ``max_concurrent_requests``; the request holds its slot until it is answered or its client
   disconnects;
4. schema validation (pydantic, 422), model name and size checks, then documents to texts,
   truncation and tokenization (thread pool, off the event loop), the
   :class:`~._scheduler.BatchScheduler` (one worker owns the model), scores, top-k and the
   response shape of the endpoint.

While an admitted request waits, the gate watches its connection: a client that disconnects
gets its queued work dropped (``499`` in the metrics, nothing scored for it). Once draining
(SIGTERM, see ``_serving``), a request still unanswered after ``graceful_shutdown_timeout``
seconds is answered 503 and its queued work dropped.

The server depends only on the :class:`~mxbai_rerank.Scorer` protocol. Scores and order are the
library's: raw head outputs go through ``scorer.postprocess`` (v2 normalized, v1 sigmoid) and
:func:`~mxbai_rerank.utils.top_k_numpy`.

Every response carries an ``X-Request-ID`` header (the client's own if it sent a sane one).
Every error, from every layer, is ``{message, error, error_type, param}`` (``_errors``). A 500
answer never shows exception text: the server logs the exception with its traceback and the
request id, and the client gets a generic message naming that id.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import re
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from .._chunking import aggregate_windows, split_options
from .._documents import Document, documents_to_texts, lookup, normalize_rank_fields
from .._encoding import EncodedPairs
from .._scorer import Scorer
from ..utils import top_k_numpy
from ._body import parse_body
from ._errors import ERROR_TYPE_BY_STATUS, ApiError
from ._metrics import CONTENT_TYPE_LATEST, ServerMetrics
from ._scheduler import BatchScheduler, SchedulerClosedError, real_tokens
from ._schemas import (
    CohereRerankRequest,
    CohereRerankResponse,
    ErrorResponse,
    HealthResponse,
    MixedbreadRerankRequest,
    MixedbreadRerankResponse,
    ModelList,
    TeiRerankRequest,
    TeiRerankResult,
)
from ._truncation import DocumentTruncator, InputTooLongError

__all__ = ["ServerSettings", "create_app"]

logger = logging.getLogger(__name__)

_RERANK_PATHS = frozenset({"/v1/reranking", "/v2/rerank", "/v1/rerank", "/rerank"})
# Reachable without the API key: probes, scrapers, and the docs (they only restate the README).
_PUBLIC_PATHS = frozenset({"/health", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
_KNOWN_PATHS = _RERANK_PATHS | _PUBLIC_PATHS | {"/v1/models"}
_UNION_TAGS = frozenset({"str", "dict[str,any]"})
_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 408, 413, 422, 429, 500, 503)
}
_REQUEST_ID_HEADER = b"x-request-id"
# A client-supplied id is echoed and logged only if it is short and cannot forge log lines.
_SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:/+=-]{1,128}")
# The id of the request being served, for log lines and 500 messages (set by _Gate).
_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("mxbai_rerank_request_id", default="-")
# Bodies larger than this are parsed in a thread, off the event loop.
_PARSE_INLINE_BYTES = 64 * 1024
# The status recorded for a request whose client disconnected before its answer (nginx's).
_CLIENT_CLOSED = 499
_CLOSE = {"Connection": "close"}

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class ServerSettings:
    """How a server behaves; the CLI maps its options onto these fields.

    Args:
        model_name: The model id clients send; default: the scorer's ``info().model_id``.
        served_model_names: More ids accepted for the same model.
        api_key: Require ``Authorization: Bearer <api_key>`` on every endpoint but /health,
            /metrics and the docs (/docs, /redoc, /openapi.json).
        max_client_batch_size: Most documents in one request (more: 413).
        max_concurrent_requests: Most rerank requests in flight (more: 429 at once).
        max_batch_tokens: Padded tokens per forward pass; default: the scorer's ``info().max_batch_tokens``.
        tokenizer_workers: Threads that tokenize requests.
        warmup: Score one pair at startup; /health answers 200 only after it succeeded.
        payload_limit: Most bytes of a request body (more: 413, before the body is read).
        max_text_chars: Most characters of any one string in a request body (more: 413).
        header_timeout: Seconds a client may take to send a request's headers (then 408);
            applied by :func:`~mxbai_rerank.server.serve`'s HTTP protocol.
        body_timeout: Seconds a client may take to send a request's body (then 408).
        graceful_shutdown_timeout: Seconds after SIGTERM before unanswered requests get 503.
    """

    model_name: str | None = None
    served_model_names: tuple[str, ...] = ()
    api_key: str | None = None
    max_client_batch_size: int = 1000
    max_concurrent_requests: int = 512
    max_batch_tokens: int | None = None
    tokenizer_workers: int = 2
    warmup: bool = True
    payload_limit: int = 2_000_000
    max_text_chars: int = 200_000
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    graceful_shutdown_timeout: float = 30.0

    def __post_init__(self) -> None:
        for name in (
            "max_client_batch_size",
            "max_concurrent_requests",
            "tokenizer_workers",
            "payload_limit",
            "max_text_chars",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("header_timeout", "body_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not self.graceful_shutdown_timeout >= 0:
            raise ValueError(f"graceful_shutdown_timeout must be >= 0, got {self.graceful_shutdown_timeout}")
        if self.max_batch_tokens is not None and self.max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens must be at least 1, got {self.max_batch_tokens}")
        if self.api_key is not None and not self.api_key:
            raise ValueError("api_key must not be empty")


def _error_response(exc: ApiError) -> JSONResponse:
    body = ErrorResponse(message=exc.message, error=exc.message, error_type=exc.error_type, param=exc.param)
    return JSONResponse(body.model_dump(), status_code=exc.status, headers=exc.headers)


def _new_request_id() -> str:
    return uuid.uuid4().hex


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None


def _client_request_id(scope: Scope) -> str | None:
    value = _header(scope, _REQUEST_ID_HEADER)
    if value is None:
        return None
    return value.decode("ascii") if _SANE_REQUEST_ID.fullmatch(value) else None


def _public_model_id(model_id: str, served_model_names: Sequence[str]) -> str:
    """The id /metrics shows: a served name, never the absolute path of a local model."""
    if served_model_names:
        return served_model_names[0]
    if os.path.isabs(model_id) or os.path.exists(model_id):
        return Path(model_id).name or model_id
    return model_id


def _format_loc(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _describe_validation(errors: Sequence[Any]) -> ApiError:
    """An error naming each bad field (the first in ``param``) for pydantic errors."""
    for err in errors:
        if err.get("type") == "json_invalid":
            detail = (err.get("ctx") or {}).get("error", err.get("msg", ""))
            return ApiError(400, f"request body is not valid JSON: {detail}")
    messages: dict[str, str] = {}
    for err in errors:
        loc = [p for p in err.get("loc", ()) if p != "body"]
        if loc and loc[-1] in _UNION_TAGS:
            name, msg = _format_loc(loc[:-1]), "Input should be a string or a JSON object"
        else:
            name, msg = _format_loc(loc), str(err.get("msg", "invalid value"))
        if err.get("type") == "missing" and not loc:
            name, msg = "body", "a JSON object body is required"
        messages.setdefault(name or "body", f"{name or 'body'}: {msg}")
    first = next(iter(messages), None)
    return ApiError(422, "; ".join(messages.values()), param=first)


def _library_error(
    exc: Exception, field: str, documents: Sequence[Document], rank_fields: Sequence[str] | None, sent_rank_fields: bool
) -> ApiError:
    """A 422 for an input the library refused, with ``param`` naming the request field."""
    message = str(exc).replace("documents[", f"{field}[")
    if "instruction" in message:
        return ApiError(422, message, param="instruction")
    if rank_fields and "rank_fields path" not in message and "rank_fields" not in message:
        # A rank_fields path the library could not even look up (e.g. a non-ASCII digit
        # segment on a list): say which document and path, as for a missing path.
        for i, doc in enumerate(documents):
            if isinstance(doc, dict):
                for path in rank_fields:
                    try:
                        lookup(doc, path)
                    except Exception:  # the library's own failure, reported as "not found"
                        message = f"rank_fields path {path!r} not found in {field}[{i}]"
                        return ApiError(422, message, param="rank_fields" if sent_rank_fields else f"{field}[{i}]")
    if "rank_fields" in message and sent_rank_fields:
        return ApiError(422, message, param="rank_fields")
    if (found := re.search(rf"{re.escape(field)}\[\d+\]", message)) is not None:
        return ApiError(422, message, param=found.group())
    return ApiError(422, message, param=field)


class _Scored(NamedTuple):
    """One request's scoring: raw scores in input order, real tokens, best windows (chunked only)."""

    raw: np.ndarray  # (num_documents,) float32
    tokens: int
    spans: list[tuple[int, int]] | None


class _Service:
    """The state one app shares between requests: model, scheduler, tokenizer pool, metrics."""

    def __init__(self, scorer: Scorer, settings: ServerSettings, metrics: ServerMetrics) -> None:
        self.scorer = scorer
        self.settings = settings
        self.metrics = metrics
        info = scorer.info()
        primary = settings.model_name or info.model_id
        self.model_ids: tuple[str, ...] = tuple(dict.fromkeys((primary, *settings.served_model_names)))
        self.created = int(time.time())
        self.in_flight = 0
        self.ready = False
        self.health_error: str | None = None
        self.draining = False
        # Set graceful_shutdown_timeout seconds after draining began: unanswered requests get 503.
        self.drain_expired: asyncio.Event | None = None
        self.scheduler: BatchScheduler | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._truncator: DocumentTruncator | None = None
        self._truncator_lock = threading.Lock()
        self._warmup: asyncio.Task[None] | None = None
        public = _public_model_id(primary, settings.served_model_names)
        metrics.model_info.labels(public, info.family, info.device, info.dtype).set(1)

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        self.drain_expired = asyncio.Event()
        self._pool = ThreadPoolExecutor(self.settings.tokenizer_workers, thread_name_prefix="mxbai-rerank-tokenize")
        self.scheduler = BatchScheduler(
            self.scorer, max_batch_tokens=self.settings.max_batch_tokens, on_batch=self.metrics.observe_batch
        )
        self.metrics.track_queue(lambda: self.scheduler.queue_depth if self.scheduler else 0)
        if self.settings.warmup:
            self._warmup = asyncio.create_task(self._warm_up())
        else:
            self.ready = True

    def begin_draining(self) -> None:
        """Refuse new work from now on; answer what is in flight within the graceful-shutdown timeout.

        Runs on the event loop (``_serving`` schedules it from the signal handler).
        """
        if self.draining:
            return
        self.draining = True
        timeout = self.settings.graceful_shutdown_timeout
        logger.info("draining: %d request(s) in flight get up to %gs to finish", self.in_flight, timeout)
        if self.drain_expired is not None:
            expired = self.drain_expired
            asyncio.get_running_loop().call_later(timeout, expired.set)

    async def stop(self) -> None:
        if self._warmup is not None and not self._warmup.done():
            self._warmup.cancel()
        if self.scheduler is not None:
            # Drains the queue: every accepted request is answered before the worker stops.
            await asyncio.to_thread(self.scheduler.close)
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def count_protocol_error(self, status: int, error_type: str) -> None:
        """Metrics for an answer the HTTP protocol layer sent itself (before any path was known)."""
        self.metrics.requests.labels("other", str(status)).inc()
        self.metrics.failures.labels("other", error_type).inc()

    async def _warm_up(self) -> None:
        started = time.perf_counter()
        request_id = _new_request_id()
        _request_id.set(request_id)  # this task's own context
        try:
            await self.score("warm-up query", ["warm-up document"], instruction=None, field="input")
        except Exception as exc:  # a failed warm-up must show on /health, not crash the server
            if not (isinstance(exc, ApiError) and exc.status == 500):  # score() logged those already
                logger.error("warm-up failed; request id %s", request_id, exc_info=exc)
            # /health is public: name the log entry, never the exception text.
            self.health_error = f"warm-up failed; request id {request_id} (see the server log)"
            return
        self.ready = True
        logger.info("warm-up done in %.2fs; ready", time.perf_counter() - started)

    def health(self) -> tuple[int, HealthResponse]:
        if self.draining:
            return 503, HealthResponse(status="draining", detail="the server is shutting down")
        if self.scheduler is None or not self.scheduler.alive:
            return 503, HealthResponse(status="unhealthy", detail="the scheduler is not running")
        if self.health_error is not None:
            return 503, HealthResponse(status="unhealthy", detail=self.health_error)
        if not self.ready:
            return 503, HealthResponse(status="loading", detail="warming up")
        return 200, HealthResponse(status="ok")

    # -- request steps -------------------------------------------------------------------
    def check_model(self, model: str | None) -> str:
        """The model id to report; 404 for a model this server does not serve."""
        if model is None:
            return self.model_ids[0]
        if model not in self.model_ids:
            raise ApiError(
                404,
                f"model {model!r} is not served here; served models: {', '.join(self.model_ids)}",
                "model_not_found",
                "model",
            )
        return model

    def check_size(self, count: int, field_name: str) -> None:
        limit = self.settings.max_client_batch_size
        if count > limit:
            raise ApiError(
                413,
                f"{field_name} has {count} documents; this server accepts at most {limit} per request "
                "(--max-client-batch-size)",
                param=field_name,
            )

    def _truncation(self) -> DocumentTruncator:
        # Built on first use (most requests never truncate); pool threads may race here.
        with self._truncator_lock:
            if self._truncator is None:
                self._truncator = DocumentTruncator(self.scorer)
            return self._truncator

    def _encode(
        self,
        query: str,
        documents: Sequence[Document],
        instruction: str | None,
        rank_fields: Sequence[str] | None,
        sent_rank_fields: bool,
        field_name: str,
        max_tokens_per_doc: int | None,
        fit: Literal["encoder", "left", "strict"],
        encode_options: dict[str, Any],
    ) -> EncodedPairs:
        """Runs in the tokenizer pool."""
        try:
            texts = documents_to_texts(documents, normalize_rank_fields(rank_fields))
            if max_tokens_per_doc is not None:
                texts = self._truncation().cut(texts, max_tokens_per_doc, keep="start")
            if fit != "encoder":
                truncator = self._truncation()
                room = truncator.room_for_document(query, instruction)
                if fit == "strict":
                    truncator.check_fits(texts, room, field_name)
                else:
                    texts = truncator.cut(texts, room, keep="end")
            return self.scorer.encode_pairs([query] * len(texts), texts, instruction=instruction, **encode_options)
        except InputTooLongError as exc:
            raise ApiError(413, str(exc), param=f"{field_name}[{exc.index}]") from exc
        except (TypeError, ValueError) as exc:
            raise _library_error(exc, field_name, documents, rank_fields, sent_rank_fields) from exc

    async def score(
        self,
        query: str,
        documents: Sequence[Document],
        *,
        instruction: str | None,
        field: str,
        rank_fields: Sequence[str] | None = None,
        sent_rank_fields: bool = False,
        max_tokens_per_doc: int | None = None,
        fit: Literal["encoder", "left", "strict"] = "encoder",
        chunking: dict[str, Any] | None = None,
    ) -> _Scored:
        """Raw head outputs (input order, one per document) and the real (unpadded) tokens scored.

        With ``chunking={"long_documents": "chunk", ...}`` a long document is scored as windows,
        its raw score is their aggregate, and ``spans`` holds each document's best window.
        """
        options, aggregate = split_options(chunking)
        if self.scheduler is None or self._pool is None:
            raise ApiError(503, "the server is not started")
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        encoded = await loop.run_in_executor(
            self._pool,
            self._encode,
            query,
            documents,
            instruction,
            rank_fields,
            sent_rank_fields,
            field,
            max_tokens_per_doc,
            fit,
            options,
        )
        self.metrics.tokenize_duration.observe(time.perf_counter() - started)
        try:
            future = self.scheduler.submit(encoded)
        except SchedulerClosedError as exc:
            raise ApiError(503, "the server is shutting down", headers=_CLOSE) from exc
        try:
            # Cancelling this await (the client left, or the drain deadline passed) cancels
            # the job: the scheduler drops it unless its scoring call already started.
            raw = await asyncio.wrap_future(future)
        except Exception as exc:
            request_id = _request_id.get()
            logger.error("scoring %d pairs failed; request id %s", len(encoded), request_id, exc_info=exc)
            raise ApiError(500, f"internal error while scoring; request id {request_id}", "backend") from exc
        spans = None
        if encoded.windows is not None:  # chunked: one raw score per document, and its best window
            raw, spans = aggregate_windows(raw, encoded.windows, aggregate)
        tokens = real_tokens(encoded)
        self.metrics.tokens.inc(tokens)
        self.metrics.documents.inc(len(documents))
        return _Scored(raw, tokens, spans)

    def ranked(self, raw: np.ndarray, top_k: int | None, *, raw_scores: bool = False) -> list[tuple[int, float]]:
        """``(index, score)`` best first, exactly as the library's ``rank`` orders them."""
        scores = raw if raw_scores else self.scorer.postprocess(raw, normalize=True)
        top_scores, order = top_k_numpy(np.asarray(scores, dtype=np.float64), top_k or len(raw))
        return [(int(i), float(s)) for i, s in zip(order, top_scores, strict=True)]


class _ClientGone(Exception):
    """The client disconnected before its answer."""


class _Replay:
    """The ``receive`` an admitted request's app sees: the body the gate read, then the connection's own."""

    def __init__(self, body: bytes, receive: Receive) -> None:
        self._body: bytes | None = body
        self._receive = receive

    async def __call__(self) -> Message:
        if self._body is not None:
            body, self._body = self._body, None
            return {"type": "http.request", "body": body, "more_body": False}
        return await self._receive()


async def _until_disconnect(receive: Receive) -> None:
    """Returns when the client has gone (called only once the whole body was received)."""
    while (await receive())["type"] != "http.disconnect":
        pass


@dataclass
class _Exchange:
    """What the gate learnt about one request's answer, for the metrics."""

    status: int = 500
    response_started: bool = False
    error_type: str | None = None


class _Gate:
    """ASGI middleware: request id, API key, body limits and deadline, strict JSON, admission
    control, disconnects and draining (see the module docstring), per-request metrics, and the
    last-resort JSON 500 for an unexpected exception (logged with the request id)."""

    def __init__(self, app: ASGIApp, service: _Service) -> None:
        self.app = app
        self.service = service
        key = service.settings.api_key
        self._expected = f"Bearer {key}".encode() if key else None

    def _authorized(self, scope: Scope) -> bool:
        if self._expected is None or scope["path"] in _PUBLIC_PATHS:
            return True
        value = _header(scope, b"authorization")
        if value is None:
            return False
        scheme, _, token = value.partition(b" ")
        return secrets.compare_digest(b"Bearer " + token.strip(), self._expected) and scheme.lower() == b"bearer"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})  # shared with the app's copy of the scope (failure kinds)
        path = scope["path"]
        endpoint = path if path in _KNOWN_PATHS else "other"
        metrics = self.service.metrics
        started = time.perf_counter()
        exchange = _Exchange()
        request_id = _client_request_id(scope) or _new_request_id()
        # Seen by the endpoint's log lines and 500 messages (its task copies this context).
        request_id_token = _request_id.set(request_id)
        id_header = (_REQUEST_ID_HEADER, request_id.encode("ascii"))

        async def send_and_watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                exchange.status = int(message["status"])
                exchange.response_started = True
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != _REQUEST_ID_HEADER]
                message = {**message, "headers": [*headers, id_header]}
            await send(message)

        try:
            try:
                if not self._authorized(scope):
                    raise ApiError(
                        401,
                        "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
                        headers={"WWW-Authenticate": "Bearer"},
                    )
                if path in _RERANK_PATHS and scope.get("method") == "POST":
                    await self._rerank(scope, receive, send_and_watch, exchange)
                else:
                    await self.app(scope, receive, send_and_watch)
            except ApiError as exc:
                if exchange.response_started:  # pragma: no cover - the gate raises before answering
                    raise
                exchange.error_type = exc.error_type
                await _error_response(exc)(scope, receive, send_and_watch)
            except _ClientGone:
                exchange.status = _CLIENT_CLOSED
                exchange.error_type = "cancelled"
        except Exception as exc:
            logger.error("unexpected error serving %s; request id %s", path, request_id, exc_info=exc)
            if exchange.response_started:
                raise  # too late for an error body; the server closes the connection
            exchange.error_type = "internal"
            error = ApiError(500, f"internal server error; request id {request_id}", "internal")
            await _error_response(error)(scope, receive, send_and_watch)
        finally:
            _request_id.reset(request_id_token)
            status = exchange.status
            metrics.requests.labels(endpoint, str(status)).inc()
            metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
            if status >= 400:
                kind = (
                    exchange.error_type
                    or scope["state"].get("failure_kind")
                    or ERROR_TYPE_BY_STATUS.get(status, "error")
                )
                metrics.failures.labels(endpoint, kind).inc()

    async def _rerank(self, scope: Scope, receive: Receive, send: Send, exchange: _Exchange) -> None:
        service = self.service
        settings = service.settings
        expired = service.drain_expired
        drain_deadline = asyncio.ensure_future(expired.wait()) if expired is not None else None
        try:
            body = await self._read_body(scope, receive, drain_deadline)
            if body:
                if len(body) > _PARSE_INLINE_BYTES:
                    await asyncio.to_thread(parse_body, body, max_text_chars=settings.max_text_chars)
                else:
                    parse_body(body, max_text_chars=settings.max_text_chars)
            # Only a complete, valid body takes a slot.
            if service.draining:
                raise ApiError(
                    503, "the server is shutting down and accepts no new requests; retry later", headers=_CLOSE
                )
            limit = settings.max_concurrent_requests
            if service.in_flight >= limit:
                raise ApiError(
                    429,
                    f"the server is at its limit of {limit} concurrent requests (--max-concurrent-requests); "
                    "retry later",
                    headers={"Retry-After": "1"},
                )
            service.in_flight += 1
            service.metrics.in_flight.inc()
            try:
                await self._run_admitted(scope, body, receive, send, exchange, drain_deadline)
            finally:
                service.in_flight -= 1
                service.metrics.in_flight.dec()
        finally:
            if drain_deadline is not None:
                drain_deadline.cancel()

    async def _read_body(self, scope: Scope, receive: Receive, drain_deadline: asyncio.Future[Any] | None) -> bytes:
        settings = self.service.settings
        limit = settings.payload_limit
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ApiError(
                413,
                f"the request body has {int(declared)} bytes; this server accepts at most {limit} (--payload-limit)",
                headers=_CLOSE,
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.body_timeout
        body = bytearray()
        more = True
        while more:
            chunk = asyncio.ensure_future(receive())
            waiting: set[asyncio.Future[Any]] = {chunk}
            if drain_deadline is not None:
                waiting.add(drain_deadline)
            done, _ = await asyncio.wait(
                waiting, timeout=max(deadline - loop.time(), 0.0), return_when=asyncio.FIRST_COMPLETED
            )
            if chunk not in done:
                chunk.cancel()
                if drain_deadline is not None and drain_deadline in done:
                    raise ApiError(503, "the server shut down before the request body arrived", headers=_CLOSE)
                raise ApiError(
                    408,
                    f"the request body did not arrive within {settings.body_timeout:g}s (--body-timeout)",
                    headers=_CLOSE,
                )
            message = chunk.result()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            body += message.get("body", b"")
            if len(body) > limit:
                raise ApiError(413, f"the request body exceeds {limit} bytes (--payload-limit)", headers=_CLOSE)
            more = bool(message.get("more_body", False))
        return bytes(body)

    async def _run_admitted(
        self,
        scope: Scope,
        body: bytes,
        receive: Receive,
        send: Send,
        exchange: _Exchange,
        drain_deadline: asyncio.Future[Any] | None,
    ) -> None:
        """Run the endpoint on ``body`` (JSON whatever the client's Content-Type said) while
        watching for a disconnect and the drain deadline; either one cancels it."""
        headers = [(k, v) for k, v in scope["headers"] if k not in (b"content-type", b"content-length")]
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode("ascii"))]
        app = asyncio.ensure_future(self.app({**scope, "headers": headers}, _Replay(body, receive), send))
        gone = asyncio.ensure_future(_until_disconnect(receive))
        try:
            waiting: set[asyncio.Future[Any]] = {app, gone}
            if drain_deadline is not None:
                waiting.add(drain_deadline)
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if app in done or exchange.response_started:
                await app  # done, or answering already: let it finish (or raise)
                return
            app.cancel()  # drops its queued work (see _Service.score)
            await asyncio.wait({app})
            if not app.cancelled() and app.exception() is not None:
                logger.debug("a cancelled request ended with %r", app.exception())
            if exchange.response_started:
                return  # it answered before the cancellation landed
            if gone in done:
                raise _ClientGone
            raise ApiError(
                503,
                "the server shut down before this request was answered (--graceful-shutdown-timeout)",
                headers=_CLOSE,
            )
        finally:
            for task in (app, gone):
                if not task.done():
                    task.cancel()


def create_app(
    scorer: Scorer, settings: ServerSettings | None = None, *, metrics: ServerMetrics | None = None
) -> FastAPI:
    """A FastAPI app serving ``scorer`` (any :class:`~mxbai_rerank.Scorer`, e.g. from :func:`mxbai_rerank.load`).

    The scheduler thread and tokenizer pool start and stop with the app's lifespan; run the
    app with :func:`mxbai_rerank.server.serve` (``mxbai-rerank serve`` does), which adds the
    request-header deadline and the graceful-shutdown deadline to uvicorn.
    """
    if not isinstance(scorer, Scorer):
        raise TypeError(f"create_app needs a mxbai_rerank.Scorer, got {type(scorer).__name__}")
    settings = settings or ServerSettings()
    service = _Service(scorer, settings, metrics or ServerMetrics())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    from .. import __version__

    app = FastAPI(
        title="mxbai-rerank",
        version=__version__,
        description="Mixedbread rerankers over HTTP: Mixedbread, Cohere and TEI rerank APIs.",
        lifespan=lifespan,
    )
    app.state.service = service
    app.add_middleware(_Gate, service=service)  # type: ignore[arg-type]

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        request.state.failure_kind = exc.error_type
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        error = _describe_validation(exc.errors())
        request.state.failure_kind = error.error_type
        return _error_response(error)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # The router's own errors (unknown path, wrong method), in the error shape.
        method, path = request.method, request.url.path
        if exc.status_code == 404:
            message = f"no endpoint at {path}; see GET /docs for the endpoints"
        elif exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow", "")
            message = f"method {method} is not allowed on {path}; allowed: {allowed}"
        else:
            message = str(exc.detail)
        error = ApiError(exc.status_code, message, headers=dict(exc.headers or {}) or None)
        request.state.failure_kind = error.error_type
        return _error_response(error)

    @app.post(
        "/v1/reranking",
        response_model=MixedbreadRerankResponse,
        responses=_ERROR_RESPONSES,
        summary="Rerank (Mixedbread API)",
        tags=["rerank"],
    )
    async def mixedbread_rerank(body: MixedbreadRerankRequest) -> JSONResponse:
        model = service.check_model(body.model)
        if body.rewrite_query:
            raise ApiError(422, "rewrite_query: not supported by the local server; send false", param="rewrite_query")
        service.check_size(len(body.input), "input")
        raw, tokens, spans = await service.score(
            body.query,
            body.input,
            instruction=body.instruction,
            field="input",
            rank_fields=body.rank_fields,
            sent_rank_fields=body.rank_fields is not None,
            chunking=body.chunking(),
        )
        data = []
        for index, score in service.ranked(raw, body.top_k):
            item: dict[str, Any] = {"index": index, "score": score, "object": "rank_result"}
            if body.return_input:
                item["input"] = body.input[index]
            if spans is not None:
                item["span"] = list(spans[index])
            data.append(item)
        return JSONResponse(
            {
                "object": "list",
                "model": model,
                "data": data,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                "top_k": body.top_k or len(body.input),
                "return_input": body.return_input,
            }
        )

    async def cohere_rerank(body: CohereRerankRequest, api_version: str) -> JSONResponse:
        model = service.check_model(body.model)
        service.check_size(len(body.documents), "documents")
        rank_fields = body.rank_fields
        if rank_fields is None and any(isinstance(d, dict) for d in body.documents):
            rank_fields = ["text"]
        raw, tokens, spans = await service.score(
            body.query,
            body.documents,
            instruction=body.instruction,
            field="documents",
            rank_fields=rank_fields,
            sent_rank_fields=body.rank_fields is not None,
            max_tokens_per_doc=body.max_tokens_per_doc,
            chunking=body.chunking(),
        )
        results = []
        for index, score in service.ranked(raw, body.top_n):
            item: dict[str, Any] = {"index": index, "relevance_score": score}
            if body.return_documents:
                doc = body.documents[index]
                item["document"] = {"text": doc} if isinstance(doc, str) else doc
            if spans is not None:
                item["span"] = list(spans[index])
            results.append(item)
        return JSONResponse(
            {
                "id": _request_id.get(),
                "model": model,
                "results": results,
                "meta": {
                    "api_version": {"version": api_version},
                    "billed_units": {"search_units": 1},
                    "tokens": {"input_tokens": tokens, "output_tokens": 0},
                },
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    @app.post(
        "/v2/rerank",
        response_model=CohereRerankResponse,
        responses=_ERROR_RESPONSES,
        summary="Rerank (Cohere v2 API)",
        tags=["rerank"],
    )
    async def cohere_rerank_v2(body: CohereRerankRequest) -> JSONResponse:
        return await cohere_rerank(body, "2")

    @app.post(
        "/v1/rerank",
        response_model=CohereRerankResponse,
        responses=_ERROR_RESPONSES,
        summary="Rerank (Cohere v1, Jina and Infinity API)",
        tags=["rerank"],
    )
    async def cohere_rerank_v1(body: CohereRerankRequest) -> JSONResponse:
        return await cohere_rerank(body, "1")

    @app.post(
        "/rerank",
        response_model=list[TeiRerankResult],
        responses=_ERROR_RESPONSES,
        summary="Rerank (text-embeddings-inference API)",
        tags=["rerank"],
    )
    async def tei_rerank(body: TeiRerankRequest) -> JSONResponse:
        service.check_model(body.model)
        service.check_size(len(body.texts), "texts")
        if body.truncate is False:
            fit: Literal["encoder", "left", "strict"] = "strict"
        elif body.truncation_direction.lower() == "left":
            fit = "left"
        else:
            fit = "encoder"
        raw, _, spans = await service.score(
            body.query, body.texts, instruction=body.instruction, field="texts", fit=fit, chunking=body.chunking()
        )
        out = []
        for index, score in service.ranked(raw, None, raw_scores=body.raw_scores):
            item: dict[str, Any] = {"index": index, "score": score}
            if body.return_text:
                item["text"] = body.texts[index]
            if spans is not None:
                item["span"] = list(spans[index])
            out.append(item)
        return JSONResponse(out)

    @app.get("/v1/models", response_model=ModelList, responses=_ERROR_RESPONSES, tags=["info"])
    async def list_models() -> ModelList:
        return ModelList.model_validate(
            {
                "data": [
                    {"id": model_id, "created": service.created, "owned_by": "mixedbread-ai"}
                    for model_id in service.model_ids
                ]
            }
        )

    @app.get("/health", response_model=HealthResponse, responses={503: {"model": HealthResponse}}, tags=["info"])
    async def health() -> JSONResponse:
        status, body = service.health()
        return JSONResponse(body.model_dump(exclude_none=True), status_code=status)

    @app.get("/metrics", response_class=Response, tags=["info"])
    async def prometheus_metrics() -> Response:
        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app
