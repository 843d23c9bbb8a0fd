"""uvicorn's h11 HTTP protocol with a request-header deadline and errors in the server's JSON shape.

uvicorn bounds the idle time between requests of a keep-alive connection, but not the time a
client takes to send a request's headers: a client could open connections and trickle header
bytes forever. Here every request's headers must be complete within ``header_timeout`` seconds
of its first byte (of the connection, for the first request); otherwise the client gets a 408
(if it sent anything) and the connection is closed. uvicorn's plain-text 400 for a malformed
request becomes the JSON error shape too. (The request *body* deadline is the app's, see
``_app._Gate``: it runs once the headers are in.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from ._errors import error_json

__all__ = ["protocol_class"]

logger = logging.getLogger(__name__)


def _raw_response(status: int, reason: str, message: str, error_type: str) -> bytes:
    body = error_json(message, error_type)
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class _DeadlineH11Protocol(H11Protocol):
    header_timeout: float = 10.0
    # Called with the status of an answer sent by the protocol itself (for the metrics).
    on_protocol_error: Callable[[int, str], None] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_deadline: asyncio.TimerHandle | None = None
        self._request_bytes = 0

    def _arm(self) -> None:
        self._disarm()
        self._request_bytes = 0
        self._header_deadline = self.loop.call_later(self.header_timeout, self._headers_timed_out)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _between_requests(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        before = self.cycle
        if self._header_deadline is None and self._between_requests():
            self._arm()  # the first byte of the next request on a keep-alive connection
        self._request_bytes += len(data)
        super().data_received(data)
        if self.cycle is not before and self.cycle is not None:
            self._disarm()  # headers complete: the app's body deadline takes over

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.cycle is not None and not self.cycle.response_complete:
            self._disarm()  # a pipelined request whose headers were already buffered

    def _headers_timed_out(self) -> None:
        self._header_deadline = None
        if self.transport.is_closing() or not self._between_requests():
            return
        if self._request_bytes:
            message = f"the request headers did not arrive within {self.header_timeout:g}s (--header-timeout)"
            logger.info("closing a connection: %s", message)
            self.transport.write(_raw_response(408, "Request Timeout", message, "timeout"))
            if self.on_protocol_error is not None:
                self.on_protocol_error(408, "timeout")
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        self._disarm()
        self.transport.write(_raw_response(400, "Bad Request", f"invalid HTTP request: {msg}", "validation"))
        if self.on_protocol_error is not None:
            self.on_protocol_error(400, "validation")
        self.transport.close()


def protocol_class(
    header_timeout: float, on_protocol_error: Callable[[int, str], None] | None = None
) -> type[H11Protocol]:
    """An h11 protocol class for ``uvicorn.Config(http=...)`` with this header deadline."""
    return type(
        "MxbaiRerankH11Protocol",
        (_DeadlineH11Protocol,),
        {"header_timeout": float(header_timeout), "on_protocol_error": staticmethod(on_protocol_error)},
    )
