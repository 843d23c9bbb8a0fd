"""What the framework integrations share: a local or remote rerank client and option checks.

A :class:`RerankClient` ranks plain documents (strings or JSON objects) for one query and
returns ``(index, score, span)`` best first, either with a reranker in this process
(:class:`LocalClient`) or through a server speaking the Mixedbread rerank API
(:class:`RemoteClient`, ``POST {base_url}/v1/reranking``). The framework modules only turn
their own document objects into such documents and the ranking back into their objects.

Scores are the library's normalized scores (``rank(..., normalize=True)``), which is what
``mxbai-rerank serve`` returns, so both modes give the same numbers for the same model.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .._documents import Document
from .._extras import require

__all__ = [
    "LocalClient",
    "Ranked",
    "RemoteClient",
    "RerankClient",
    "RerankServerError",
    "check_positive",
    "check_rank_fields",
    "configure",
    "make_client",
    "type_name",
]

logger = logging.getLogger(__name__)

# Arguments the integrations set themselves: not accepted among the extra rank options.
_RESERVED = frozenset(
    {"query", "documents", "input", "top_k", "top_n", "return_documents", "return_input", "sort", "model"}
)
# Library options that the server has no request field for (it always normalizes).
_LOCAL_ONLY = frozenset({"normalize", "batch_size", "max_batch_tokens", "show_progress"})


class RerankServerError(RuntimeError):
    """The rerank server answered with an error (``status``) or with a body that is not a ranking."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Ranked:
    """One ranked document: its input position, its score, and the best window's character span
    (with ``long_documents="chunk"``; ``None`` otherwise)."""

    index: int
    score: float
    span: tuple[int, int] | None = None


class RerankClient(Protocol):
    def warm_up(self) -> None:
        """Load the model, or check that the server answers."""
        ...

    def rank(self, query: str, documents: Sequence[Document], top_n: int | None) -> list[Ranked]: ...

    async def arank(self, query: str, documents: Sequence[Document], top_n: int | None) -> list[Ranked]: ...


def type_name(obj: object) -> str:
    """``obj``'s type, with its module unless builtin: a LangChain and a Haystack ``Document`` differ."""
    cls = type(obj)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def check_positive(value: object, name: str, *, allow_none: bool = True) -> int | None:
    """``value`` as a positive int (or ``None`` where allowed), else an error naming ``name``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive integer{' or None' if allow_none else ''}, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer{' or None' if allow_none else ''}, got {value!r}")
    return value


def check_rank_fields(rank_fields: object) -> list[str] | None:
    if rank_fields is None:
        return None
    if isinstance(rank_fields, str):
        rank_fields = [rank_fields]
    if (
        not isinstance(rank_fields, Sequence)
        or not rank_fields
        or not all(isinstance(f, str) and f for f in rank_fields)
    ):
        raise TypeError(
            f"rank_fields must be a non-empty list of field names (dotted paths allowed), got {rank_fields!r}"
        )
    return list(rank_fields)


def _check_instruction(instruction: object) -> str | None:
    if instruction is not None and not isinstance(instruction, str):
        raise TypeError(f"instruction must be a str or None, got {type(instruction).__name__}")
    return instruction


def _check_rank_kwargs(rank_kwargs: Mapping[str, Any], *, remote: bool) -> dict[str, Any]:
    reserved = sorted(set(rank_kwargs) & (_RESERVED | {"instruction", "rank_fields"}))
    if reserved:
        raise TypeError(
            f"unexpected rank option(s) {', '.join(reserved)}: the integration sets these itself "
            "(use top_n / top_k, instruction and rank_fields arguments)"
        )
    if remote:
        local_only = sorted(set(rank_kwargs) & _LOCAL_ONLY)
        if local_only:
            raise ValueError(
                f"rank option(s) {', '.join(local_only)} apply to a local model only; "
                "the server always returns normalized scores and batches by itself"
            )
        try:
            json.dumps(dict(rank_kwargs))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"rank options must be JSON values to be sent to the server: {exc}") from exc
    return dict(rank_kwargs)


class LocalClient:
    """Ranks with a reranker in this process: a loaded object with ``rank()``, or a name/path
    loaded with :func:`mxbai_rerank.load` on :meth:`warm_up` (or first use)."""

    def __init__(
        self,
        model: Any,
        *,
        instruction: str | None = None,
        rank_fields: list[str] | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
        rank_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(model, (str, os.PathLike)):
            if not str(model):
                raise ValueError("model must name a model or a local checkpoint directory, got ''")
            self.model_name: str | None = str(model)
            self._reranker: Any = None
        elif callable(getattr(model, "rank", None)):
            if model_kwargs:
                raise ValueError("model_kwargs apply when model is a name or path; the reranker given is loaded")
            self.model_name = None
            self._reranker = model
        else:
            raise TypeError(
                "model must be a model name or path, or a loaded reranker with a rank() method "
                f"(e.g. mxbai_rerank.load(...)), got {type_name(model)}"
            )
        self.instruction = _check_instruction(instruction)
        self.rank_fields = check_rank_fields(rank_fields)
        self.model_kwargs = dict(model_kwargs or {})
        self.rank_kwargs = _check_rank_kwargs(rank_kwargs or {}, remote=False)

    @property
    def reranker(self) -> Any:
        self.warm_up()
        return self._reranker

    def warm_up(self) -> None:
        if self._reranker is None:
            from .._loader import load

            logger.info("loading reranker %s", self.model_name)
            self._reranker = load(self.model_name, **self.model_kwargs)

    def rank(self, query: str, documents: Sequence[Document], top_n: int | None) -> list[Ranked]:
        if not documents:
            return []
        options: dict[str, Any] = {"normalize": True, **self.rank_kwargs}
        if self.instruction is not None:
            options["instruction"] = self.instruction
        if self.rank_fields is not None:
            options["rank_fields"] = self.rank_fields
        results = self.reranker.rank(
            query, list(documents), top_k=top_n or len(documents), return_documents=False, **options
        )
        return [Ranked(int(r.index), float(r.score), _span(getattr(r, "span", None))) for r in results]

    async def arank(self, query: str, documents: Sequence[Document], top_n: int | None) -> list[Ranked]:
        # Scoring is CPU/GPU work: keep the event loop free (the library serialises scoring calls).
        return await asyncio.to_thread(self.rank, query, documents, top_n)


class RemoteClient:
    """Ranks through ``POST {base_url}/v1/reranking`` (``mxbai-rerank serve``, or any server
    speaking the Mixedbread rerank API). ``base_url`` is the server root; a trailing ``/v1`` is
    accepted too. ``model`` (optional) names the served model in each request."""

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        instruction: str | None = None,
        rank_fields: list[str] | None = None,
        rank_kwargs: Mapping[str, Any] | None = None,
        extra: str = "server",
    ) -> None:
        self._httpx = require("httpx", extra)
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http:// or https:// URL, got {base_url!r}")
        if model is not None and not isinstance(model, str):
            raise TypeError(
                "with base_url, model names the served model (a str) or is None; "
                f"a loaded reranker runs in process without base_url (got {type(model).__name__})"
            )
        if api_key is not None and (not isinstance(api_key, str) or not api_key):
            raise ValueError("api_key must be a non-empty str or None")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        root = base_url.rstrip("/")
        root = root.removesuffix("/v1")
        self.base_url = base_url
        self.url = f"{root}/v1/reranking"
        self._health_url = f"{root}/health"
        self.model = model
        self.instruction = _check_instruction(instruction)
        self.rank_fields = check_rank_fields(rank_fields)
        self.rank_kwargs = _check_rank_kwargs(rank_kwargs or {}, remote=True)
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = self._httpx.Timeout(timeout, connect=min(5.0, float(timeout)))
        self._client: Any = None
        self._reachable = False

    def _sync_client(self) -> Any:
        if self._client is None:
            self._client = self._httpx.Client(headers=self._headers, timeout=self._timeout)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _unreachable(self, exc: Exception) -> ConnectionError:
        return ConnectionError(f"cannot reach the rerank server at base_url={self.base_url!r}: {exc}")

    def warm_up(self) -> None:
        """Fail fast when nothing answers at ``base_url`` (any HTTP answer counts as reachable)."""
        if self._reachable:
            return
        try:
            self._sync_client().get(self._health_url)
        except self._httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        self._reachable = True

    def _body(self, query: str, documents: Sequence[Document], top_n: int | None) -> dict[str, Any]:
        body: dict[str, Any] = {**self.rank_kwargs, "query": query, "input": list(documents), "return_input": False}
        if top_n is not None:
            body["top_k"] = top_n
        if self.model is not None:
            body["model"] = self.model
        if self.instruction is not None:
            body["instruction"] = self.instruction
        if self.rank_fields is not None:
            body["rank_fields"] = self.rank_fields
        return body

    def _parse(self, response: Any, count: int) -> list[Ranked]:
        if response.status_code != 200:
            try:
                detail = response.json().get("message") or response.text
            except ValueError:
                detail = response.text
            hint = " (check api_key)" if response.status_code in (401, 403) else ""
            raise RerankServerError(
                f"rerank server at base_url={self.base_url!r} answered {response.status_code}{hint}: {detail}",
                response.status_code,
            )
        try:
            data = response.json()["data"]
            ranked = [Ranked(int(item["index"]), float(item["score"]), _span(item.get("span"))) for item in data]
        except (ValueError, KeyError, TypeError) as exc:
            raise RerankServerError(
                f"rerank server at base_url={self.base_url!r} sent a body that is not a Mixedbread ranking: {exc}",
                response.status_code,
            ) from exc
        if any(not 0 <= r.index < count for r in ranked):
            raise RerankServerError(f"rerank server at base_url={self.base_url!r} sent an index out of range")
        return ranked

    def rank(self, query: str, documents: Sequence[Document], top_n: int | None) -> list[Ranked]:
        if not documents:
            return []
        try:
            response = self._sync_client().post(self.url, json=self._body(query, documents, top_n))
        except self._httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        return self._parse(response, len(documents))

    async def arank(self, query: str, documents: Sequence[Document], top_n: int | None) -> list[Ranked]:
        if not documents:
            return []
        # A client per call: an httpx.AsyncClient is bound to the event loop that created it.
        async with self._httpx.AsyncClient(headers=self._headers, timeout=self._timeout) as client:
            try:
                response = await client.post(self.url, json=self._body(query, documents, top_n))
            except self._httpx.TransportError as exc:
                raise self._unreachable(exc) from exc
        return self._parse(response, len(documents))


def _span(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    start, end = value
    return int(start), int(end)


def make_client(
    model: Any = None,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    timeout: float = 60.0,
    instruction: str | None = None,
    rank_fields: Sequence[str] | str | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    rank_kwargs: Mapping[str, Any] | None = None,
    extra: str = "server",
) -> LocalClient | RemoteClient:
    """A :class:`RemoteClient` when ``base_url`` is given, else a :class:`LocalClient` for ``model``.

    ``extra`` names the optional extra that installs httpx for the calling integration.
    """
    fields = check_rank_fields(rank_fields)
    if base_url is not None:
        if model_kwargs:
            raise ValueError("model_kwargs apply to a local model; with base_url the server has loaded its model")
        return RemoteClient(
            base_url,
            model=model,
            api_key=api_key,
            timeout=timeout,
            instruction=instruction,
            rank_fields=fields,
            rank_kwargs=rank_kwargs,
            extra=extra,
        )
    if api_key is not None:
        raise ValueError("api_key is for a server: give base_url too (or leave api_key out for a local model)")
    if model is None:
        raise TypeError(
            "give model (a model name, path or loaded reranker) for a local model, or base_url for a server"
        )
    return LocalClient(
        model, instruction=instruction, rank_fields=fields, model_kwargs=model_kwargs, rank_kwargs=rank_kwargs
    )


def configure(
    model: Any,
    *,
    base_url: str | None,
    api_key: str | None,
    top_n: int | None,
    instruction: str | None,
    rank_fields: Sequence[str] | str | None,
    model_kwargs: Mapping[str, Any] | None,
    timeout: float,
    rank_kwargs: Mapping[str, Any],
    extra: str,
) -> tuple[LocalClient | RemoteClient, dict[str, Any]]:
    """A checked, warmed-up client and the checked field values of a pydantic-based integration
    (the LangChain compressor and the LlamaIndex postprocessor declare the same fields)."""
    top_n = check_positive(top_n, "top_n")
    client = make_client(
        model,
        base_url=base_url,
        api_key=api_key,
        timeout=timeout,
        instruction=instruction,
        rank_fields=rank_fields,
        model_kwargs=model_kwargs,
        rank_kwargs=rank_kwargs,
        extra=extra,
    )
    client.warm_up()
    fields = {
        "model": model,
        "base_url": base_url,
        "api_key": api_key,
        "top_n": top_n,
        "instruction": instruction,
        "rank_fields": client.rank_fields,
        "model_kwargs": dict(model_kwargs or {}),
        "rank_kwargs": client.rank_kwargs,
        "timeout": timeout,
    }
    return client, fields
