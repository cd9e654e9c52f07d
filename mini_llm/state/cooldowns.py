"""Key rests shared by replicas: a local mirror that `acquire` reads without waiting.

`KeyStore.acquire` is synchronous and on every try's path, so it never talks to Redis.
Each process keeps a mirror of the resting-until times (wall clock, per provider and key
id) that the Redis backend refreshes with one pipelined read every 50 ms; a rest is
written to the mirror at once and to Redis in the background. A key rested by one replica
is therefore skipped by the others within one poll plus a round trip (under 100 ms).

A short poll rather than pub/sub: it costs one small round trip per replica every 50 ms,
needs no subscription to re-establish after Redis restarts, and a replica that missed a
message (started later, reconnected) is corrected by the next read anyway.

Keys are known in Redis only by a hash (`key_id`), never by their value.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..keys import KeyStore, MemoryKeyStore


def key_id(key: str) -> str:
    """How a key is named outside this process: a short hash, never the key."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


class Cooldowns:
    """Resting-until times as last read from the shared store, plus this process's own rests."""

    __slots__ = ("_until", "_write")

    def __init__(self, write: Callable[[str, str, float], None]) -> None:
        self._until: dict[str, dict[str, float]] = {}
        self._write = write  # (provider, key id, until) -> written to the shared store

    @property
    def providers(self) -> tuple[str, ...]:
        return tuple(self._until)

    def watch(self, provider: str) -> None:
        self._until.setdefault(provider, {})

    def resting(self, provider: str) -> Mapping[str, float]:
        return self._until.get(provider, {})

    def load(self, provider: str, until: Mapping[str, float]) -> None:
        """What the shared store holds now; local rests not yet written there are kept."""
        now = time.time()
        mine = self._until.setdefault(provider, {})
        for ident, value in until.items():
            if value > now and value > mine.get(ident, 0.0):
                mine[ident] = value
        for ident in [i for i, v in mine.items() if v <= now]:
            del mine[ident]

    def rest(self, provider: str, ident: str, until: float) -> None:
        mine = self._until.setdefault(provider, {})
        if until > mine.get(ident, 0.0):
            mine[ident] = until
        self._write(provider, ident, until)


class SharedKeyStore(MemoryKeyStore):
    """MemoryKeyStore on the wall clock whose rests are shared through a Cooldowns mirror.

    Rotation order and failure counts stay per process; only rests are shared.
    """

    __slots__ = ("_cooldowns", "_ids")

    def __init__(self, keys: tuple[str, ...], provider: str, cooldowns: Cooldowns) -> None:
        # Wall clock, not monotonic: resting-until times are compared across machines.
        super().__init__(keys, provider=provider, clock=time.time)
        self._cooldowns = cooldowns
        self._ids = {k: key_id(k) for k in keys}
        cooldowns.watch(provider)

    def __repr__(self) -> str:
        return "Shared" + super().__repr__()

    def _merge(self) -> None:
        remote = self._cooldowns.resting(self.provider)
        if not remote:
            return
        for state in self._keys:
            until = remote.get(self._ids[state.value], 0.0)
            if until > state.resting_until:
                state.resting_until = until

    def adopt(self, previous: KeyStore) -> None:
        super().adopt(previous)
        if isinstance(previous, MemoryKeyStore) and not isinstance(previous, SharedKeyStore):
            # The previous store counted on its own clock (monotonic): move rests to ours.
            shift = self._clock() - previous._clock()
            for state in self._keys:
                if state.resting_until:
                    state.resting_until += shift

    def acquire(self) -> str | None:
        self._merge()
        return super().acquire()

    def rest(self, key: str, seconds: float) -> None:
        super().rest(key, seconds)
        for state in self._keys:
            if state.value == key:
                self._cooldowns.rest(self.provider, self._ids[key], state.resting_until)

    def seconds_until_available(self) -> float:
        self._merge()
        return super().seconds_until_available()

    def states(self) -> list[dict[str, Any]]:
        self._merge()
        return super().states()
