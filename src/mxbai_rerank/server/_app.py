"""The FastAPI application: three rerank API shapes over one dynamic-batching scheduler.

Request path: request id, auth and admission (ASGI middleware) -> body validation (pydantic)
-> model name and size checks -> documents to texts, truncation and tokenization (thread pool,
off the event loop) -> :class:`~._scheduler.BatchScheduler` (one worker owns the model) ->
scores, top-k and the response shape of the endpoint.

The server depends only on the :class:`~mxbai_rerank.Scorer` protocol. Scores and order are the
library's: raw head outputs go through ``scorer.postprocess`` (v2 normalized, v1 sigmoid) and
:func:`~mxbai_rerank.utils.top_k_numpy`.

Every response carries an ``X-Request-ID`` header (the client's own if it sent a sane one). A
500 answer never shows exception text: the server logs the exception with its traceback and
the request id, and the client gets a generic message naming that id.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from .._documents import Document, documents_to_texts, normalize_rank_fields
from .._encoding import EncodedPairs
from .._scorer import Scorer
from ..utils import top_k_numpy
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
# Reachable without the API key (probes and scrapers).
_PUBLIC_PATHS = frozenset({"/health", "/metrics"})
_KNOWN_PATHS = _RERANK_PATHS | _PUBLIC_PATHS | {"/v1/models", "/docs", "/redoc", "/openapi.json"}
_KIND_BY_STATUS = {
    400: "bad_request",
    401: "auth",
    404: "not_found",
    405: "bad_request",
    413: "too_large",
    422: "validation",
    429: "overloaded",
    500: "internal",
    503: "unavailable",
}
_UNION_TAGS = frozenset({"str", "dict[str,any]"})
_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 422, 429, 500, 503)
}
_REQUEST_ID_HEADER = b"x-request-id"
# A client-supplied id is echoed and logged only if it is short and cannot forge log lines.
_SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:/+=-]{1,128}")
# The id of the request being served, for log lines and 500 messages (set by _Gate).
_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("mxbai_rerank_request_id", default="-")

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
        api_key: Require ``Authorization: Bearer <api_key>`` on every endpoint but /health and /metrics.
        max_client_batch_size: Most documents in one request (more: 413).
        max_concurrent_requests: Most rerank requests in flight (more: 429 at once).
        max_batch_tokens: Padded tokens per forward pass; default: the scorer's ``info().max_batch_tokens``.
        tokenizer_workers: Threads that tokenize requests.
        warmup: Score one pair at startup; /health answers 200 only after it succeeded.
    """

    model_name: str | None = None
    served_model_names: tuple[str, ...] = ()
    api_key: str | None = None
    max_client_batch_size: int = 1000
    max_concurrent_requests: int = 512
    max_batch_tokens: int | None = None
    tokenizer_workers: int = 2
    warmup: bool = True

    def __post_init__(self) -> None:
        for name in ("max_client_batch_size", "max_concurrent_requests", "tokenizer_workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_batch_tokens is not None and self.max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens must be at least 1, got {self.max_batch_tokens}")
        if self.api_key is not None and not self.api_key:
            raise ValueError("api_key must not be empty")


class _ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind or _KIND_BY_STATUS.get(status, "error")
        self.param = param


def _error_response(
    status: int, message: str, kind: str, param: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = ErrorResponse(message=message, error=message, error_type=kind, param=param)
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _new_request_id() -> str:
    return uuid.uuid4().hex


def _client_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == _REQUEST_ID_HEADER:
            return value.decode("ascii") if _SANE_REQUEST_ID.fullmatch(value) else None
    return None


def _format_loc(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _describe_validation(errors: Sequence[Any]) -> tuple[int, str, str | None]:
    """(status, message naming each bad field, first bad field) for pydantic errors."""
    for err in errors:
        if err.get("type") == "json_invalid":
            detail = (err.get("ctx") or {}).get("error", err.get("msg", ""))
            return 400, f"request body is not valid JSON: {detail}", None
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
    return 422, "; ".join(messages.values()), first


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
        self.scheduler: BatchScheduler | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._truncator: DocumentTruncator | None = None
        self._truncator_lock = threading.Lock()
        self._warmup: asyncio.Task[None] | None = None
        metrics.model_info.labels(primary, info.family, info.device, info.dtype).set(1)

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        self._pool = ThreadPoolExecutor(self.settings.tokenizer_workers, thread_name_prefix="mxbai-rerank-tokenize")
        self.scheduler = BatchScheduler(
            self.scorer, max_batch_tokens=self.settings.max_batch_tokens, on_batch=self.metrics.observe_batch
        )
        self.metrics.track_queue(lambda: self.scheduler.queue_depth if self.scheduler else 0)
        if self.settings.warmup:
            self._warmup = asyncio.create_task(self._warm_up())
        else:
            self.ready = True

    async def stop(self) -> None:
        if self._warmup is not None and not self._warmup.done():
            self._warmup.cancel()
        if self.scheduler is not None:
            # Drains the queue: every accepted request is answered before the worker stops.
            await asyncio.to_thread(self.scheduler.close)
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    async def _warm_up(self) -> None:
        started = time.perf_counter()
        request_id = _new_request_id()
        _request_id.set(request_id)  # this task's own context
        try:
            await self.score("warm-up query", ["warm-up document"], instruction=None, field="input")
        except Exception as exc:  # a failed warm-up must show on /health, not crash the server
            if not (isinstance(exc, _ApiError) and exc.status == 500):  # score() logged those already
                logger.error("warm-up failed; request id %s", request_id, exc_info=exc)
            # /health is public: name the log entry, never the exception text.
            self.health_error = f"warm-up failed; request id {request_id} (see the server log)"
            return
        self.ready = True
        logger.info("warm-up done in %.2fs; ready", time.perf_counter() - started)

    def health(self) -> tuple[int, HealthResponse]:
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
            raise _ApiError(
                404,
                f"model {model!r} is not served here; served models: {', '.join(self.model_ids)}",
                "model_not_found",
                "model",
            )
        return model

    def check_size(self, count: int, field_name: str) -> None:
        limit = self.settings.max_client_batch_size
        if count > limit:
            raise _ApiError(
                413,
                f"{field_name} has {count} documents; this server accepts at most {limit} per request "
                "(--max-client-batch-size)",
                "too_large",
                field_name,
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
        field_name: str,
        max_tokens_per_doc: int | None,
        fit: Literal["encoder", "left", "strict"],
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
            return self.scorer.encode_pairs([query] * len(texts), texts, instruction=instruction)
        except InputTooLongError as exc:
            raise _ApiError(413, str(exc), "too_long", field_name) from exc
        except (TypeError, ValueError) as exc:
            # The library names documents "documents[i]"; say which request field they came from.
            raise _ApiError(422, str(exc).replace("documents[", f"{field_name}["), "validation") from exc

    async def score(
        self,
        query: str,
        documents: Sequence[Document],
        *,
        instruction: str | None,
        field: str,
        rank_fields: Sequence[str] | None = None,
        max_tokens_per_doc: int | None = None,
        fit: Literal["encoder", "left", "strict"] = "encoder",
    ) -> tuple[np.ndarray, int]:
        """Raw head outputs (input order) and the number of real (unpadded) tokens scored."""
        if self.scheduler is None or self._pool is None:
            raise _ApiError(503, "the server is not started", "unavailable")
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        encoded = await loop.run_in_executor(
            self._pool,
            self._encode,
            query,
            documents,
            instruction,
            rank_fields,
            field,
            max_tokens_per_doc,
            fit,
        )
        self.metrics.tokenize_duration.observe(time.perf_counter() - started)
        try:
            future = self.scheduler.submit(encoded)
        except SchedulerClosedError as exc:
            raise _ApiError(503, "the server is shutting down", "unavailable") from exc
        try:
            raw = await asyncio.wrap_future(future)
        except Exception as exc:
            request_id = _request_id.get()
            logger.error("scoring %d pairs failed; request id %s", len(encoded), request_id, exc_info=exc)
            raise _ApiError(500, f"internal error while scoring; request id {request_id}", "model") from exc
        tokens = real_tokens(encoded)
        self.metrics.tokens.inc(tokens)
        self.metrics.documents.inc(len(encoded))
        return raw, tokens

    def ranked(self, raw: np.ndarray, top_k: int | None, *, raw_scores: bool = False) -> list[tuple[int, float]]:
        """``(index, score)`` best first, exactly as the library's ``rank`` orders them."""
        scores = raw if raw_scores else self.scorer.postprocess(raw, normalize=True)
        top_scores, order = top_k_numpy(np.asarray(scores, dtype=np.float64), top_k or len(raw))
        return [(int(i), float(s)) for i, s in zip(order, top_scores, strict=True)]


class _Gate:
    """ASGI middleware: request id, API key, admission control (429), per-request metrics, and
    the last-resort JSON 500 for an unexpected exception (logged with the request id)."""

    def __init__(self, app: ASGIApp, service: _Service) -> None:
        self.app = app
        self.service = service
        key = service.settings.api_key
        self._expected = f"Bearer {key}".encode() if key else None

    def _authorized(self, scope: Scope) -> bool:
        if self._expected is None or scope["path"] in _PUBLIC_PATHS:
            return True
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                return secrets.compare_digest(b"Bearer " + token.strip(), self._expected) and (
                    scheme.lower() == b"bearer"
                )
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        endpoint = path if path in _KNOWN_PATHS else "other"
        metrics = self.service.metrics
        started = time.perf_counter()
        status = 500
        response_started = False
        failure_kind: str | None = None
        request_id = _client_request_id(scope) or _new_request_id()
        # Seen by the endpoint's log lines and 500 messages (same task, so same context).
        request_id_token = _request_id.set(request_id)
        id_header = (_REQUEST_ID_HEADER, request_id.encode("ascii"))

        async def send_and_watch(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = int(message["status"])
                response_started = True
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != _REQUEST_ID_HEADER]
                message = {**message, "headers": [*headers, id_header]}
            await send(message)

        admitted = False
        try:
            if not self._authorized(scope):
                response = _error_response(
                    401,
                    "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
                    "auth",
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await response(scope, receive, send_and_watch)
                return
            if path in _RERANK_PATHS and scope.get("method") == "POST":
                limit = self.service.settings.max_concurrent_requests
                if self.service.in_flight >= limit:
                    response = _error_response(
                        429,
                        f"the server is at its limit of {limit} concurrent requests (--max-concurrent-requests); "
                        "retry later",
                        "overloaded",
                        headers={"Retry-After": "1"},
                    )
                    await response(scope, receive, send_and_watch)
                    return
                admitted = True
                self.service.in_flight += 1
                metrics.in_flight.inc()
            try:
                await self.app(scope, receive, send_and_watch)
            except Exception as exc:
                logger.error("unexpected error serving %s; request id %s", path, request_id, exc_info=exc)
                if response_started:
                    raise  # too late for an error body; the server closes the connection
                failure_kind = "internal"
                response = _error_response(500, f"internal server error; request id {request_id}", "internal")
                await response(scope, receive, send_and_watch)
        finally:
            _request_id.reset(request_id_token)
            if admitted:
                self.service.in_flight -= 1
                metrics.in_flight.dec()
            metrics.requests.labels(endpoint, str(status)).inc()
            metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
            if status >= 400:
                kind = (
                    failure_kind
                    or (scope.get("state") or {}).get("failure_kind")
                    or _KIND_BY_STATUS.get(status, "error")
                )
                metrics.failures.labels(endpoint, kind).inc()


def create_app(
    scorer: Scorer, settings: ServerSettings | None = None, *, metrics: ServerMetrics | None = None
) -> FastAPI:
    """A FastAPI app serving ``scorer`` (any :class:`~mxbai_rerank.Scorer`, e.g. from :func:`mxbai_rerank.load`).

    The scheduler thread and tokenizer pool start and stop with the app's lifespan; run the
    app with uvicorn (``mxbai-rerank serve`` does).
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

    @app.exception_handler(_ApiError)
    async def _api_error(request: Request, exc: _ApiError) -> JSONResponse:
        request.state.failure_kind = exc.kind
        return _error_response(exc.status, exc.message, exc.kind, exc.param)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, message, param = _describe_validation(exc.errors())
        kind = "bad_request" if status == 400 else "validation"
        request.state.failure_kind = kind
        return _error_response(status, message, kind, param)

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
            raise _ApiError(422, "rewrite_query: not supported by the local server; send false", param="rewrite_query")
        service.check_size(len(body.input), "input")
        raw, tokens = await service.score(
            body.query, body.input, instruction=body.instruction, field="input", rank_fields=body.rank_fields
        )
        data = []
        for index, score in service.ranked(raw, body.top_k):
            item: dict[str, Any] = {"index": index, "score": score, "object": "rank_result"}
            if body.return_input:
                item["input"] = body.input[index]
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
        raw, tokens = await service.score(
            body.query,
            body.documents,
            instruction=body.instruction,
            field="documents",
            rank_fields=rank_fields,
            max_tokens_per_doc=body.max_tokens_per_doc,
        )
        results = []
        for index, score in service.ranked(raw, body.top_n):
            item: dict[str, Any] = {"index": index, "relevance_score": score}
            if body.return_documents:
                doc = body.documents[index]
                item["document"] = {"text": doc} if isinstance(doc, str) else doc
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
        raw, _ = await service.score(body.query, body.texts, instruction=body.instruction, field="texts", fit=fit)
        out = []
        for index, score in service.ranked(raw, None, raw_scores=body.raw_scores):
            item: dict[str, Any] = {"index": index, "score": score}
            if body.return_text:
                item["text"] = body.texts[index]
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
