"""Run an app from :func:`~._app.create_app` with uvicorn: header deadline and graceful shutdown.

On SIGTERM or SIGINT the listening socket closes (new connections are refused), idle
keep-alive connections close, and the app starts draining (``_Service.begin_draining``): a
request that was not yet admitted (its body still arriving) is answered 503; requests in flight
are answered normally until ``graceful_shutdown_timeout`` seconds have passed, and then 503,
their queued work dropped. Then the scheduler finishes the batch it is scoring and the process
exits.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
from types import FrameType
from typing import Any

import uvicorn

from ._protocol import protocol_class

__all__ = ["serve"]

logger = logging.getLogger(__name__)

# uvicorn's own deadline, after the app's: only a task that ignores the app's 503 meets it.
_UVICORN_GRACE_S = 5


class _DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, service: Any) -> None:
        super().__init__(config)
        self._service = service
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._loop is not None and not self.should_exit:
            self._loop.call_soon_threadsafe(self._service.begin_draining)
        super().handle_exit(sig, frame)


def serve(
    app: Any, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info", access_log: bool = False
) -> None:
    """Serve ``app`` (from :func:`~mxbai_rerank.server.create_app`) until SIGTERM/SIGINT."""
    service = app.state.service
    settings = service.settings
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=access_log,
        http=protocol_class(settings.header_timeout, service.count_protocol_error),
        timeout_graceful_shutdown=math.ceil(settings.graceful_shutdown_timeout) + _UVICORN_GRACE_S,
    )
    _DrainingServer(config, service).run()
