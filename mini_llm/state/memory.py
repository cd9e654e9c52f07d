"""State in this process's memory: the default, and the fallback when Redis fails."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from ..keys import KeyStore, MemoryKeyStore
from .base import ALLOWED, WINDOW_S, Budget, Decision, Kind, denied, wait_s


class _Window:
    """Counts of the current fixed minute and of the one before it."""

    __slots__ = ("curr", "index", "prev")

    def __init__(self, index: int) -> None:
        self.index = index
        self.prev = 0
        self.curr = 0

    def roll(self, index: int) -> None:
        if index == self.index:
            return
        self.prev = self.curr if index == self.index + 1 else 0
        self.curr = 0
        self.index = index


class MemoryState:
    """Counters, cache entries and key rests for one process (per worker with --workers N)."""

    def __init__(
        self,
        max_entries: int = 1000,
        max_body_bytes: int = 1024 * 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.errors = 0  # memory never fails; kept so both backends read the same
        self.max_entries = max_entries
        self.max_body_bytes = max_body_bytes
        self._clock = clock
        # Scopes come from the routing table, so this stays as small as the table.
        self._windows: dict[tuple[str, Kind], _Window] = {}
        self._cache: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    @property
    def shared(self) -> bool:
        return False

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def key_store(self, keys: tuple[str, ...], provider: str) -> KeyStore:
        return MemoryKeyStore(keys, provider=provider)

    # Rate limits ---------------------------------------------------------------------------

    def _window(self, scope: str, kind: Kind, index: int) -> _Window:
        window = self._windows.get((scope, kind))
        if window is None:
            window = self._windows[(scope, kind)] = _Window(index)
        window.roll(index)
        return window

    def admit_now(self, budgets: Sequence[Budget], tokens: int = 0) -> Decision:
        """admit() without awaiting: the Redis backend's fallback decides with it inline."""
        checks = [c for b in budgets for c in b.checks(tokens)]
        if not checks:
            return ALLOWED
        now = self._clock()
        index, offset = divmod(now, WINDOW_S)
        elapsed = offset / WINDOW_S
        worst: Decision = ALLOWED
        worst_wait = 0.0
        for scope, kind, limit, cost in checks:
            window = self._window(scope, kind, int(index))
            wait = wait_s(window.prev, window.curr, elapsed, limit, cost)
            if wait > worst_wait:
                worst_wait, worst = wait, denied(f"{scope}:{kind}", wait)
        if not worst.allowed:
            return worst
        for scope, kind, limit, cost in checks:
            self._window(scope, kind, int(index)).curr += min(cost, limit)
        return ALLOWED

    async def admit(self, budgets: Sequence[Budget], tokens: int = 0) -> Decision:
        return self.admit_now(budgets, tokens)

    def settle_now(self, budgets: Sequence[Budget], estimate: int, actual: int) -> None:
        delta = actual - estimate
        if delta == 0:
            return
        index = int(self._clock() // WINDOW_S)
        for budget in budgets:
            if budget.tpm is not None:
                window = self._window(budget.scope, "tpm", index)
                window.curr = max(0, window.curr + delta)

    async def settle(self, budgets: Sequence[Budget], estimate: int, actual: int) -> None:
        self.settle_now(budgets, estimate, actual)

    # Cache ---------------------------------------------------------------------------------

    def cache_get_now(self, key: str) -> bytes | None:
        entry = self._cache.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires <= self._clock():
            del self._cache[key]
            return None
        self._cache.move_to_end(key)
        return value

    async def cache_get(self, key: str) -> bytes | None:
        return self.cache_get_now(key)

    def cache_set_now(self, key: str, value: bytes, ttl_s: float) -> bool:
        if len(value) > self.max_body_bytes:
            return False
        self._cache[key] = (self._clock() + ttl_s, value)
        self._cache.move_to_end(key)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return True

    async def cache_set(self, key: str, value: bytes, ttl_s: float) -> bool:
        return self.cache_set_now(key, value, ttl_s)

    def __len__(self) -> int:
        return len(self._cache)
