"""Per-provider connection pools and key state, carried across reloads of the table."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
from multidict import CIMultiDict

from .access import Access
from .balance import Balancer, Circuit
from .config import Config, Pool, Provider
from .keys import KeyStore
from .routing import RoutingTable
from .state import State as SharedState
from .upstream import Upstream

log = logging.getLogger("mini_llm")


# aiohttp's own defaults, never added to what the client sent.
_NOT_ADDED: CIMultiDict[None] = CIMultiDict(
    (name, None) for name in ("Accept", "Accept-Encoding", "Content-Type", "User-Agent")
)


class _UpstreamRequest(aiohttp.ClientRequest):
    """A request that adds none of aiohttp's default headers.

    The same as `skip_auto_headers` naming all four, without building that list anew for
    every request.
    """

    def update_auto_headers(self, skip_auto_headers: Iterable[str] | None) -> None:
        self._skip_auto_headers = _NOT_ADDED


class Connections:
    """One ClientSession for one provider endpoint; closed once retired and idle."""

    __slots__ = ("_closing", "active", "retired", "session")

    def __init__(self, pool: Pool) -> None:
        connector = aiohttp.TCPConnector(
            limit=pool.limit,
            limit_per_host=pool.limit_per_host,
            keepalive_timeout=pool.keepalive_s,
            ttl_dns_cache=300,
        )
        # auto_decompress=False: compressed upstream bodies reach the client untouched.
        # DummyCookieJar: a cookie one client's answer set is never sent for another client.
        self.session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            request_class=_UpstreamRequest,
            timeout=aiohttp.ClientTimeout(total=None),
        )
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

    def _close_soon(self) -> None:
        if self._closing is None and not self.session.closed:
            self._closing = asyncio.get_running_loop().create_task(self.session.close())

    async def close(self) -> None:
        self.retired = True
        if self._closing is not None:
            await self._closing
        elif not self.session.closed:
            await self.session.close()


@dataclass(frozen=True)
class ProviderRuntime:
    """What a request needs to reach one provider under one routing table."""

    provider: Provider
    upstream: Upstream
    connections: Connections | None  # None: a builtin provider, answered in-process
    keys: KeyStore
    timeout: aiohttp.ClientTimeout
    circuit: Circuit


def _session_identity(provider: Provider) -> tuple[object, ...]:
    # What a ClientSession is built from: the endpoint it talks to and its pool settings.
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
            and _session_identity(before.provider) == _session_identity(provider)
        ):
            connections = before.connections
        else:
            connections = Connections(provider.pool)
        if before is not None and before.keys.keys == provider.keys:
            keys = before.keys
        else:
            keys = shared.key_store(provider.keys, name)
            if before is not None:
                keys.adopt(before.keys)
        timeouts = provider.timeouts
        runtimes[name] = ProviderRuntime(
            provider=provider,
            upstream=table.upstreams[name],
            connections=connections,
            keys=keys,
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=timeouts.connect_s, sock_read=timeouts.read_s
            ),
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
