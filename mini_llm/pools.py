"""Per-provider connection pools and key state, carried across reloads of the table."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from . import http1
from .access import Access
from .balance import Balancer, Circuit
from .config import Config, Pool, Provider
from .keys import KeyStore
from .routing import RoutingTable
from .state import State as SharedState
from .upstream import Upstream

log = logging.getLogger("mini_llm")


class Connections:
    """The connection pool of one provider endpoint; closed once retired and idle."""

    __slots__ = ("_closing", "active", "pool", "retired")

    def __init__(self, base_url: str, pool: Pool) -> None:
        # Each endpoint has its own pool, so the tighter of the two limits is the one that holds.
        limit = min((n for n in (pool.limit, pool.limit_per_host) if n), default=0)
        self.pool = http1.Pool(base_url, limit, pool.keepalive_s)
        self.active = 0
        self.retired = False
        self._closing: asyncio.Task[None] | None = None

    def hold(self) -> Connections:
        """Count one more user until `release`: a pool retired by a reload closes after its last."""
        self.active += 1
        return self

    def release(self) -> None:
        self.active -= 1
        if self.retired and self.active == 0:
            self._close_soon()

    def retire(self) -> None:
        """No new requests will come; close after the last in-flight one ends."""
        self.retired = True
        if self.active == 0:
            self._close_soon()

    @property
    def closed(self) -> bool:
        return self.pool.closed

    def _close_soon(self) -> None:
        if self._closing is None and not self.pool.closed:
            self._closing = asyncio.get_running_loop().create_task(self.pool.close())

    async def close(self) -> None:
        self.retired = True
        if self._closing is not None:
            await self._closing
        elif not self.pool.closed:
            await self.pool.close()


@dataclass(frozen=True)
class ProviderRuntime:
    """What a request needs to reach one provider under one routing table."""

    provider: Provider
    upstream: Upstream
    connections: Connections | None  # None: a builtin provider, answered in-process
    keys: KeyStore
    circuit: Circuit


def _pool_identity(provider: Provider) -> tuple[object, ...]:
    # What a connection pool is built from: the endpoint it talks to and its pool settings.
    parts = urlsplit(provider.base_url)
    return (parts.scheme, parts.netloc, provider.pool)


@dataclass(frozen=True)
class Snapshot:
    """A routing table with the runtimes of its providers; swapped as one object."""

    table: RoutingTable
    runtimes: Mapping[str, ProviderRuntime]
    generation: int
    loaded_at: float
    access: Access
    balancer: Balancer
    shared: SharedState  # cooldowns, rate limits and cache entries (memory or Redis)

    @property
    def config(self) -> Config:
        return self.table.config


def build_snapshot(table: RoutingTable, previous: Snapshot | None, shared: SharedState) -> Snapshot:
    """Runtimes for a new table, reusing warm pools and key state of unchanged providers."""
    old = previous.runtimes if previous is not None else {}
    runtimes: dict[str, ProviderRuntime] = {}
    for name, provider in table.providers.items():
        if not provider.base_url and not provider.builtin:
            continue
        before = old.get(name)
        connections: Connections | None = None
        if provider.builtin:
            pass
        elif (
            before is not None
            and before.connections is not None
            and _pool_identity(before.provider) == _pool_identity(provider)
        ):
            connections = before.connections
        else:
            connections = Connections(provider.base_url, provider.pool)
        if before is not None and before.keys.keys == provider.keys:
            keys = before.keys
        else:
            keys = shared.key_store(provider.keys, name)
            if before is not None:
                keys.adopt(before.keys)
        runtimes[name] = ProviderRuntime(
            provider=provider,
            upstream=table.upstreams[name],
            connections=connections,
            keys=keys,
            circuit=before.circuit if before is not None else Circuit(),
        )
    generation = previous.generation + 1 if previous is not None else 1
    access = Access(table.config.server)
    balancer = previous.balancer if previous is not None else Balancer()
    return Snapshot(table, runtimes, generation, time.time(), access, balancer, shared)


def retire_unused(previous: Snapshot, current: Snapshot) -> None:
    """Retire the sessions the new snapshot no longer uses (after their requests finish)."""
    kept = {id(r.connections) for r in current.runtimes.values()}
    for name, runtime in previous.runtimes.items():
        if runtime.connections is not None and id(runtime.connections) not in kept:
            log.info("closing the connection pool of provider %s once its requests end", name)
            runtime.connections.retire()
