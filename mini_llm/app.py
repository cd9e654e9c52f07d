"""create_app(config) -> web.Application: the HTTP surface, app state and its cleanup."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from . import __version__
from .config import Config
from .errors import ProxyError
from .masking import mask
from .pools import Connections, Snapshot, build_snapshot, retire_unused
from .proxy import Exchange, error_response, handle, request_id_of
from .routing import compile_routes

log = logging.getLogger("mini_llm")
access_log = logging.getLogger("mini_llm.access")


class State:
    """The live routing table. Swapped by one assignment; requests keep the one they began with."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.snapshot: Snapshot | None = None
        self.last_error: str | None = None
        # Every pool ever handed out and not yet closed, so shutdown closes retired ones too.
        self._connections: set[Connections] = set()

    @property
    def current(self) -> Snapshot:
        assert self.snapshot is not None, "the app has not started"
        return self.snapshot

    def install(self, config: Config) -> Snapshot:
        """Compile a table and make it current; warm pools of unchanged providers are kept."""
        previous = self.snapshot
        snapshot = build_snapshot(compile_routes(config), previous)
        self.config = config
        self.snapshot = snapshot  # the one atomic swap
        self.last_error = None
        if previous is not None:
            retire_unused(previous, snapshot)
        self._connections = {c for c in self._connections if not c.session.closed}
        self._connections.update(r.connections for r in snapshot.runtimes.values())
        return snapshot

    async def close(self) -> None:
        for connections in self._connections:
            await connections.close()


STATE = web.AppKey("state", State)


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds")


async def health(request: web.Request) -> web.Response:
    state = request.app[STATE]
    snapshot = state.current
    providers: dict[str, Any] = {}
    for name, provider in snapshot.table.providers.items():
        runtime = snapshot.runtimes.get(name)
        providers[name] = {
            "enabled": provider.enabled,
            "keys": len(provider.keys),
            "key_states": runtime.keys.states() if runtime is not None else [],
        }
        if provider.disabled_reason:
            providers[name]["disabled_reason"] = provider.disabled_reason
    return web.json_response(
        {
            "status": "ok",
            "version": __version__,
            "pid": os.getpid(),  # tells apart the workers of `serve --workers N`
            "config": {
                "path": state.config.path,
                "generation": snapshot.generation,
                "loaded_at": _iso(snapshot.loaded_at),
                "last_error": state.last_error,
            },
            "providers": providers,
        },
        headers={"x-request-id": request_id_of(request)},
    )


async def models(request: web.Request) -> web.Response:
    snapshot = request.app[STATE].current
    table = snapshot.table
    created = int(snapshot.loaded_at)
    data: list[dict[str, Any]] = []
    seen: set[str] = set()

    def add(model_id: str, owner: str) -> None:
        if model_id not in seen:
            seen.add(model_id)
            data.append({"id": model_id, "object": "model", "created": created, "owned_by": owner})

    for alias, targets in table.aliases.items():
        add(alias, targets[0].provider)
    for name, provider in table.providers.items():
        for model_id in provider.models:
            add(model_id, name)
    return web.json_response(
        {"object": "list", "data": data}, headers={"x-request-id": request_id_of(request)}
    )


async def routed(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    snapshot = state.current  # this request's table, whatever reloads happen meanwhile
    exchange = Exchange(request, request_id_of(request))
    started = time.monotonic()
    response = await handle(request, snapshot, state.config.server.max_body_bytes, exchange)
    if state.config.server.log_requests:
        access_log.info(
            "%s %s %d %.1fms route=%s key=%s id=%s",
            request.method,
            request.path,
            response.status,
            (time.monotonic() - started) * 1000,
            exchange.route_header,
            mask(exchange.key) if exchange.key else "-",
            exchange.request_id,
        )
    return response


async def not_found(request: web.Request) -> web.Response:
    err = ProxyError(404, "not_found", f"no route for {request.method} {request.path}")
    return error_response(request.path, request_id_of(request), "-", err)


def create_app(config: Config) -> web.Application:
    """The gateway application; its ClientSessions live and die with it (cleanup_ctx)."""
    app = web.Application()
    state = State(config)
    app[STATE] = state

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        state.install(state.config)
        yield
        await state.close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/{tail:.+}", routed)
    app.router.add_route("*", "/{tail:.*}", not_found)
    return app
