"""create_app(config) -> web.Application: the HTTP surface, app state and its cleanup."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from . import __version__
from .config import Config
from .front import Front, not_found
from .intake import Incoming
from .metrics import API_PATHS
from .observe import METRICS, Observer
from .playground import playground_handler
from .pools import Connections, Snapshot, build_snapshot, retire_unused
from .proxy import REPLAYS, handle
from .routing import compile_routes
from .signing import Replays
from .state import State as SharedState
from .state import open_state

log = logging.getLogger("mini_llm")


class State:
    """The live routing table. Swapped by one assignment; requests keep the one they began with."""

    def __init__(self, config: Config) -> None:
        self._initial = config  # served once the app starts
        self.snapshot: Snapshot | None = None
        # Cooldowns, limits and cache entries: one store for the process's life (state.redis
        # needs a restart to change).
        self.shared: SharedState = open_state(config.state, config.cache)
        self.last_error: str | None = None
        # Every pool ever handed out and not yet closed, so shutdown closes retired ones too.
        self._connections: set[Connections] = set()

    @property
    def config(self) -> Config:
        """The settings in service: those of the current snapshot."""
        return self._initial if self.snapshot is None else self.snapshot.config

    @property
    def current(self) -> Snapshot:
        assert self.snapshot is not None, "the app has not started"
        return self.snapshot

    def install(self, config: Config) -> Snapshot:
        """Compile a table and make it current; warm pools of unchanged providers are kept."""
        previous = self.snapshot
        snapshot = build_snapshot(compile_routes(config), previous, self.shared)
        self.snapshot = snapshot  # the one atomic swap
        self.last_error = None
        if previous is not None:
            retire_unused(previous, snapshot)
        self._connections = {c for c in self._connections if not c.closed}
        self._connections.update(
            r.connections for r in snapshot.runtimes.values() if r.connections is not None
        )
        return snapshot

    async def close(self) -> None:
        for connections in self._connections:
            await connections.close()
        await self.shared.close()


STATE = web.AppKey("state", State)
FRONT = web.AppKey("front", Front)  # wraps any endpoint added later: app[FRONT].wrap(h)


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds")


async def health(incoming: Incoming) -> web.Response:
    state = incoming.request.app[STATE]
    snapshot = incoming.snapshot
    providers: dict[str, Any] = {}
    for name, provider in snapshot.table.providers.items():
        runtime = snapshot.runtimes.get(name)
        providers[name] = {
            "enabled": provider.enabled,
            "keys": len(provider.keys),
            "key_states": runtime.keys.states() if runtime is not None else [],
            **(
                runtime.circuit.shown() if runtime is not None else {"circuit": None, "until": None}
            ),
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
        headers={"x-request-id": incoming.request_id},
    )


async def models(incoming: Incoming) -> web.Response:
    snapshot = incoming.snapshot
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
        {"object": "list", "data": data}, headers={"x-request-id": incoming.request_id}
    )


def create_app(config: Config) -> web.Application:
    """The gateway application; its connection pools live and die with it (cleanup_ctx)."""
    state = State(config)
    observer = Observer(state)
    front = Front(lambda: state.current, observer)
    app = web.Application()  # no middlewares: each endpoint is wrapped by `front` once
    app[STATE] = state
    app[FRONT] = front
    app[METRICS] = observer.metrics
    app[REPLAYS] = Replays()

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await state.shared.start()
        state.install(state.config)
        yield
        await state.close()

    app.cleanup_ctx.append(lifecycle)
    observer.install(app, front.wrap)  # /metrics, and publishing with workers
    app.router.add_get("/health", front.wrap(health))
    app.router.add_get("/v1/models", front.wrap(models))
    app.router.add_get("/", front.wrap(playground_handler()))
    routed = front.wrap(handle)
    for path in API_PATHS:  # found by one lookup; any other /v1/ path by the pattern after
        if path != "/v1/models":
            app.router.add_post(path, routed)
    app.router.add_post("/v1/{tail:.+}", routed)
    app.router.add_route("*", "/{tail:.*}", front.wrap(not_found))  # 404 in the client's shape
    return app
