"""Watch every request go by: metrics, the access line, x-mini-llm-overhead-ms; serve /metrics.

The front door (front.py) tells the `Observer` how each request ended, those it refused
included; the routed endpoint leaves what served the request in the request (`SERVED`).
Requests outside /v1/ (/health, /metrics, the playground) cost nothing here unless the
access log is on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from typing import TYPE_CHECKING

from aiohttp import web

from .accesslog import log_request
from .intake import request_id_of
from .metrics import Metrics
from .proxy import Served
from .relay import OVERHEAD_HEADER

if TYPE_CHECKING:
    from .app import State

METRICS = web.AppKey("metrics", Metrics)
SERVED = web.RequestKey("mini_llm.served", Served)  # left by the routed handler
# The classic text format: what every Prometheus version reads.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
CLIENT_CLOSED = 499  # nginx's status for a client that left before its answer

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Observer:
    """Where requests are counted and logged once they end."""

    __slots__ = ("_state", "in_flight", "metrics")

    def __init__(self, state: State) -> None:
        self._state = state
        self.in_flight = 0  # requests under /v1/ being served now
        self.metrics = Metrics(lambda: state.snapshot, lambda: self.in_flight)

    @property
    def logging(self) -> bool:
        return self._state.config.server.log_requests

    def install(self, app: web.Application, wrap: Callable[[Handler], Handler]) -> None:
        """Serve /metrics; with workers, keep this one's values where the others see them."""
        metrics = self.metrics
        app.router.add_get("/metrics", wrap(_scrape(metrics)))
        if metrics.shared:

            async def publishing(app: web.Application) -> AsyncIterator[None]:
                task = asyncio.create_task(metrics.keep_publishing())
                yield
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task

            app.cleanup_ctx.append(publishing)

    def answered(
        self,
        request: web.Request,
        request_id: str,
        api: str | None,
        response: web.StreamResponse,
        started: float,
    ) -> None:
        """An endpoint gave its answer: a whole one now, a stream's already sent."""
        served: Served | None = request.get(SERVED) if api is not None else None
        duration = time.perf_counter() - started
        first_byte = duration  # a whole answer goes out as the endpoint returns it
        if served is not None:
            if not response.prepared:
                # (A stream has its own, set by relay before its headers went out.)
                overhead = max(duration - served.waited, 0.0)
                response.headers[OVERHEAD_HEADER] = f"{overhead * 1000:.2f}"
            elif served.first_byte_at is not None:
                first_byte = served.first_byte_at - started
        self.done(request, request_id, api, response.status, duration, first_byte, served)

    def left(self, request: web.Request, request_id: str, api: str | None, duration: float) -> None:
        """The client went away before its answer ended."""
        self.done(request, request_id, api, CLIENT_CLOSED, duration, None, None, cancelled=True)

    def done(
        self,
        request: web.Request,
        request_id: str,
        api: str | None,
        status: int,
        duration: float,
        first_byte: float | None,
        served: Served | None = None,
        cancelled: bool = False,
    ) -> None:
        state = self._state
        if api is not None:
            self.metrics.observe(api, status, duration, first_byte, served, state.current.table)
        server = state.config.server
        if server.log_requests:
            log_request(
                request,
                request_id,
                status,
                duration,
                first_byte,
                served,
                cancelled,
                server.log_format,
            )


def _scrape(metrics: Metrics) -> Handler:
    async def scrape(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=metrics.exposition(),
            headers={"Content-Type": CONTENT_TYPE, "x-request-id": request_id_of(request)},
        )

    return scrape
