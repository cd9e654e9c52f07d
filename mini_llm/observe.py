"""Watch every request go by: metrics, the access line, x-mini-llm-overhead-ms; serve /metrics.

The front door (front.py) tells the `Observer` how each request ended, those it refused
included; the routed endpoint leaves what served the request in `Incoming.served`.
Requests outside /v1/ (/health, /metrics, the playground) cost nothing here unless the
access log is on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from typing import TYPE_CHECKING

from aiohttp import web

from .accesslog import log_request
from .intake import Endpoint, Handler, Incoming
from .metrics import Metrics
from .relay import OVERHEAD_HEADER

if TYPE_CHECKING:
    from .app import State

METRICS = web.AppKey("metrics", Metrics)
# The classic text format: what every Prometheus version reads.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
CLIENT_CLOSED = 499  # nginx's status for a client that left before its answer


class Observer:
    """Where requests are counted and logged once they end."""

    __slots__ = ("in_flight", "metrics")

    def __init__(self, state: State) -> None:
        self.in_flight = 0  # requests under /v1/ being served now
        self.metrics = Metrics(lambda: state.snapshot, lambda: self.in_flight)

    def install(self, app: web.Application, wrap: Callable[[Endpoint], Handler]) -> None:
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

    def answered(self, incoming: Incoming, api: str | None, response: web.StreamResponse) -> None:
        """An endpoint gave its answer: a whole one now, a stream's already sent."""
        started = incoming.started
        duration = time.perf_counter() - started
        first_byte = duration  # a whole answer goes out as the endpoint returns it
        served = incoming.served
        if served is not None:
            if not response.prepared:
                # (A stream has its own, set by relay before its headers went out.)
                overhead = duration - served.waited
                response.headers[OVERHEAD_HEADER] = f"{max(overhead, 0.0) * 1000:.2f}"
            elif served.first_byte_at is not None:
                first_byte = served.first_byte_at - started
        self._done(incoming, api, response.status, duration, first_byte)

    def refused(
        self, incoming: Incoming, api: str | None, answer: web.StreamResponse | web.HTTPException
    ) -> None:
        """The front door answered for the endpoint (or aiohttp will, with `answer`)."""
        duration = time.perf_counter() - incoming.started
        self._done(incoming, api, answer.status, duration, duration)

    def left(self, incoming: Incoming, api: str | None) -> None:
        """The client went away before its answer ended."""
        duration = time.perf_counter() - incoming.started
        self._done(incoming, api, CLIENT_CLOSED, duration, None, cancelled=True)

    def _done(
        self,
        incoming: Incoming,
        api: str | None,
        status: int,
        duration: float,
        first_byte: float | None,
        cancelled: bool = False,
    ) -> None:
        snapshot = incoming.snapshot
        if api is not None:
            self.metrics.observe(api, status, duration, first_byte, incoming.served, snapshot.table)
        server = snapshot.config.server
        if server.log_requests:
            log_request(incoming, status, duration, first_byte, cancelled, server.log_format)


def _scrape(metrics: Metrics) -> Endpoint:
    async def scrape(incoming: Incoming) -> web.StreamResponse:
        return web.Response(
            body=metrics.exposition(),
            headers={"Content-Type": CONTENT_TYPE, "x-request-id": incoming.request_id},
        )

    return scrape
