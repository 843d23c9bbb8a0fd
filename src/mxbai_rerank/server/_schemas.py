"""Request and response bodies of the three rerank API shapes, plus models and errors.

Requests are strict (no silent coercion of ``"5"`` to 5 or ``1`` to ``True``) and ignore
unknown fields, so newer SDKs that send extra options keep working.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "CohereRerankRequest",
    "CohereRerankResponse",
    "ErrorResponse",
    "HealthResponse",
    "MixedbreadRerankRequest",
    "MixedbreadRerankResponse",
    "ModelList",
    "TeiRerankRequest",
    "TeiRerankResult",
]

Document = str | dict[str, Any]


class _LongDocuments(BaseModel):
    """The library's long-document options, as request fields of every API."""

    model_config = ConfigDict(strict=True, extra="ignore")

    long_documents: Literal["truncate", "chunk"] = Field(
        default="truncate",
        description="Documents longer than the window: cut them (default), or score overlapping windows and "
        "aggregate their scores.",
    )
    chunk_size: int | None = Field(default=None, ge=1, description="With chunk: document tokens per window.")
    chunk_stride: int | None = Field(
        default=None, ge=1, description="With chunk: tokens between window starts (smaller than chunk_size)."
    )
    chunk_aggregate: Literal["max", "first", "mean"] = Field(
        default="max", description="With chunk: a document's score from its windows' scores."
    )

    def chunking(self) -> dict[str, Any]:
        """The library's long-document options of this request."""
        return {
            "long_documents": self.long_documents,
            "chunk_size": self.chunk_size,
            "chunk_stride": self.chunk_stride,
            "chunk_aggregate": self.chunk_aggregate,
        }


class _Request(_LongDocuments):
    model: str | None = Field(default=None, description="A served model id (see GET /v1/models); optional.")
    query: str = Field(description="The search query.")
    instruction: str | None = Field(
        default=None, description="Optional task instruction put before the query (v2 models only)."
    )


class MixedbreadRerankRequest(_Request):
    """``POST /v1/reranking``: the Mixedbread API."""

    input: list[Document] = Field(min_length=1, description="Documents: strings or JSON objects.")
    rank_fields: list[str] | None = Field(
        default=None, min_length=1, description="Dotted paths of the object fields to score."
    )
    top_k: int | None = Field(default=None, ge=1, description="How many results; default: all.")
    return_input: bool = Field(default=False, description="Include each document in its result.")
    rewrite_query: bool = Field(default=False, description="Not supported by the local server: must be false.")


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class MixedbreadRankResult(BaseModel):
    index: int
    score: float
    input: Document | None = None
    object: Literal["rank_result"] = "rank_result"
    span: list[int] | None = Field(
        default=None,
        description="With long_documents=chunk: [start, end) characters of the best-scoring window in the "
        "document's scored text.",
    )


class MixedbreadRerankResponse(BaseModel):
    object: Literal["list"] = "list"
    model: str
    data: list[MixedbreadRankResult]
    usage: Usage
    top_k: int
    return_input: bool


class CohereRerankRequest(_Request):
    """``POST /v2/rerank`` and ``/v1/rerank``: the Cohere API (also Jina and Infinity clients)."""

    documents: list[Document] = Field(
        min_length=1, description="Strings, or objects scored by their `text` field (or by `rank_fields`)."
    )
    top_n: int | None = Field(default=None, ge=1, description="How many results; default: all.")
    return_documents: bool = Field(default=False, description="Include each document in its result.")
    max_tokens_per_doc: int | None = Field(
        default=None, ge=1, description="Truncate each document to this many tokens before scoring."
    )
    rank_fields: list[str] | None = Field(
        default=None, min_length=1, description="Dotted paths of the object fields to score (default: `text`)."
    )


class CohereRankResult(BaseModel):
    index: int
    relevance_score: float
    document: dict[str, Any] | None = None
    span: list[int] | None = Field(
        default=None,
        description="With long_documents=chunk: [start, end) characters of the best-scoring window in the "
        "document's scored text.",
    )


class CohereRerankResponse(BaseModel):
    id: str
    model: str
    results: list[CohereRankResult]
    meta: dict[str, Any]
    usage: Usage


class TeiRerankRequest(_LongDocuments):
    """``POST /rerank``: the Hugging Face text-embeddings-inference API."""

    model: str | None = Field(default=None, description="A served model id; optional.")
    query: str
    texts: list[str] = Field(min_length=1)
    raw_scores: bool = Field(default=False, description="Raw head outputs instead of scores in [0, 1].")
    return_text: bool = False
    truncate: bool | None = Field(
        default=None, description="Truncate inputs longer than the model's window (default); false: reject them."
    )
    truncation_direction: Literal["Right", "Left", "right", "left"] = "Right"
    instruction: str | None = None


class TeiRerankResult(BaseModel):
    index: int
    score: float
    text: str | None = None
    span: list[int] | None = Field(
        default=None,
        description="With long_documents=chunk: [start, end) characters of the best-scoring window in the "
        "document's scored text.",
    )


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class HealthResponse(BaseModel):
    status: Literal["ok", "loading", "draining", "unhealthy"]
    detail: str | None = None


class ErrorResponse(BaseModel):
    """Readable by Cohere clients (``message``) and TEI clients (``error``, ``error_type``).

    ``param`` names the request field at fault (``input[2].meta.year``), or is null when the
    error is not about one field (malformed HTTP, body too large, API key, rate limit, timeout).
    """

    message: str
    error: str
    error_type: str = Field(
        description="validation, auth, not_found, model_not_found, method_not_allowed, timeout, overloaded, "
        "unhealthy, backend or internal"
    )
    param: str | None = None
