"""Key rotation and cooldowns: which key a try uses, and which keys rest (SPEC §8)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

from .masking import mask

MAX_RETRY_AFTER_S = 300.0


class KeyStore(Protocol):
    """Where key state lives. In memory per process today; a shared store can plug in here."""

    def acquire(self) -> str | None:
        """The next key that is not resting, round-robin; None when every key rests."""

    def rest(self, key: str, seconds: float) -> None:
        """Take a key out of rotation for a while after a failure."""

    def seconds_until_available(self) -> float:
        """How long until the earliest resting key returns (0 when one is available)."""

    def states(self) -> list[dict[str, Any]]:
        """Each key's masked id, state, return time and recent failures, for /health."""


@dataclass
class _Key:
    value: str
    resting_until: float = 0.0  # monotonic clock
    failures: int = 0


class MemoryKeyStore:
    """Round-robin over a provider's keys, skipping the resting ones."""

    __slots__ = ("_clock", "_keys", "_next")

    def __init__(self, keys: tuple[str, ...], clock: Callable[[], float] = time.monotonic) -> None:
        self._keys = [_Key(k) for k in keys]
        self._next = 0
        self._clock = clock

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(k.value for k in self._keys)

    def adopt(self, previous: MemoryKeyStore) -> None:
        """Keep the rotation position and the rest state of keys that are still configured."""
        old = {k.value: k for k in previous._keys}
        for key in self._keys:
            if key.value in old:
                key.resting_until = old[key.value].resting_until
                key.failures = old[key.value].failures
        if self._keys:
            self._next = previous._next % len(self._keys)

    def acquire(self) -> str | None:
        count = len(self._keys)
        if count == 0:
            return None
        now = self._clock()
        start = self._next
        for offset in range(count):
            index = (start + offset) % count
            key = self._keys[index]
            if key.resting_until <= now:
                self._next = (index + 1) % count
                return key.value
        return None

    def rest(self, key: str, seconds: float) -> None:
        for state in self._keys:
            if state.value == key:
                state.failures += 1
                state.resting_until = max(state.resting_until, self._clock() + seconds)

    def seconds_until_available(self) -> float:
        if not self._keys:
            return 0.0
        now = self._clock()
        return max(0.0, min(k.resting_until for k in self._keys) - now)

    def states(self) -> list[dict[str, Any]]:
        now = self._clock()
        wall = time.time()
        out = []
        for key in self._keys:
            resting = key.resting_until > now
            until = None
            if resting:
                until = datetime.fromtimestamp(wall + key.resting_until - now, timezone.utc)
            out.append(
                {
                    "id": mask(key.value),
                    "state": "resting" if resting else "ok",
                    "until": until.isoformat(timespec="seconds") if until else None,
                    "failures": key.failures,
                }
            )
        return out


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds a 429 asks us to wait: retry-after-ms, Retry-After seconds or HTTP date."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return min(max(float(millis) / 1000.0, 0.0), MAX_RETRY_AFTER_S)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER_S)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    current = time.time() if now is None else now
    return min(max(when.timestamp() - current, 0.0), MAX_RETRY_AFTER_S)
