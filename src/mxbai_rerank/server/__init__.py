"""A production rerank server: Mixedbread, Cohere and TEI APIs over dynamic batching.

>>> import mxbai_rerank
>>> from mxbai_rerank.server import ServerSettings, create_app
>>> app = create_app(mxbai_rerank.load("mixedbread-ai/mxbai-rerank-base-v2"), ServerSettings(api_key="secret"))

Run it with ``serve(app, host=..., port=...)`` (uvicorn with the server's request-header and
graceful-shutdown deadlines), or use the ``mxbai-rerank serve`` command. Needs the ``server`` extra.
"""

from __future__ import annotations

from .._extras import require

for _module in ("fastapi", "uvicorn", "prometheus_client"):
    require(_module, "server")

from ._app import ServerSettings, create_app  # noqa: E402
from ._metrics import ServerMetrics  # noqa: E402
from ._scheduler import BatchScheduler, BatchStats, SchedulerClosedError  # noqa: E402
from ._serving import serve  # noqa: E402

__all__ = [
    "BatchScheduler",
    "BatchStats",
    "SchedulerClosedError",
    "ServerMetrics",
    "ServerSettings",
    "create_app",
    "serve",
]
