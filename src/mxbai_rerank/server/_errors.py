"""The one error shape of every layer (ASGI app, middleware and HTTP protocol) and its types.

Every error answer is JSON ``{"message", "error", "error_type", "param"}``: Cohere clients read
``message``, text-embeddings-inference (TEI) clients read ``error`` and switch on
``error_type``. Where TEI has a type for the same failure the value is TEI's (``validation``,
``overloaded``, ``unhealthy``, ``backend``); the others are this server's own.
"""

from __future__ import annotations

import json

__all__ = ["ERROR_TYPE_BY_STATUS", "ApiError", "error_json"]

# The error_type of a status when nothing more specific applies.
ERROR_TYPE_BY_STATUS = {
    400: "validation",
    401: "auth",
    404: "not_found",
    405: "method_not_allowed",
    408: "timeout",
    413: "validation",
    415: "validation",
    422: "validation",
    429: "overloaded",
    500: "internal",
    503: "unhealthy",
}


class ApiError(Exception):
    """An answer with an error status; ``param`` names the request field at fault (or None)."""

    def __init__(
        self,
        status: int,
        message: str,
        error_type: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type or ERROR_TYPE_BY_STATUS.get(status, "error")
        self.param = param
        self.headers = headers


def error_json(message: str, error_type: str, param: str | None = None) -> bytes:
    """The body of an error answer."""
    body = {"message": message, "error": message, "error_type": error_type, "param": param}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
