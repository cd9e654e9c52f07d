"""Key state: which key a try uses, how each upstream outcome rests it, and for how long.

The rules of README "Retries, key failover and fallbacks" live here: `outcome_of` names what
an upstream status means, `KeyStore.report` applies the cooldown it calls for. A store shared
by several processes (Redis) implements the same `KeyStore` protocol.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Literal, Protocol

from .config import Cooldown
from .masking import mask

log = logging.getLogger("mini_llm")

MAX_RETRY_AFTER_S = 300.0

# What one try came to; the names are the `outcome` label of mini_llm_upstream_tries_total.
Outcome = Literal[
    "ok", "client_error", "rate_limited", "auth_failed", "server_error", "connect_error", "timeout"
]
_SERVER_ERRORS = frozenset({500, 502, 503, 504})
_AUTH_FAILURES = frozenset({401, 402, 403})
# Outcomes after which another try may succeed: with the next key at once, or after a pause.
NEXT_KEY: frozenset[Outcome] = frozenset({"rate_limited", "auth_failed"})
AFTER_PAUSE: frozenset[Outcome] = frozenset({"server_error", "connect_error"})


def outcome_of(status: int) -> Outcome:
    """What an upstream status means for the key that got it and for the next try."""
    if status == 429:
        return "rate_limited"
    if status in _AUTH_FAILURES:
        return "auth_failed"
    if status in _SERVER_ERRORS:
        return "server_error"
    return "ok" if status < 400 else "client_error"


class KeyStore(Protocol):
    """Where key state lives. In memory per process today; a shared store can plug in here."""

    @property
    def keys(self) -> tuple[str, ...]:
        """The configured keys, in rotation order."""

    def adopt(self, previous: KeyStore) -> None:
        """Carry the rotation position and rest state of kept keys over a reload."""

    def acquire(self) -> str | None:
        """The next key that is not resting, round-robin; None when every key rests."""

    def report(
        self, key: str, status: int, headers: Mapping[str, str], cooldown: Cooldown
    ) -> Outcome:
        """What a key's upstream answer means; rests the key if it must (429, 401/402/403)."""

    def rest(self, key: str, seconds: float) -> None:
        """Take a key out of rotation for a while after a failure."""

    def seconds_until_available(self) -> float:
        """How long until the earliest resting key returns (0 when one is available)."""

    def states(self) -> list[dict[str, Any]]:
        """Each key's masked id, state, return time and recent failures, for /health."""


class _Key:
    __slots__ = ("failures", "resting_until", "value")

    def __init__(self, value: str) -> None:
        self.value = value
        self.resting_until = 0.0  # monotonic clock
        self.failures = 0

    def __repr__(self) -> str:
        until, failures = self.resting_until, self.failures
        return f"_Key({mask(self.value)}, resting_until={until}, failures={failures})"


class MemoryKeyStore:
    """Round-robin over a provider's keys, skipping the resting ones."""

    __slots__ = ("_clock", "_keys", "_next", "provider")

    def __init__(
        self, keys: tuple[str, ...], provider: str = "", clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.provider = provider
        self._keys = [_Key(k) for k in keys]
        self._next = 0
        self._clock = clock

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(k.value for k in self._keys)

    def __repr__(self) -> str:
        return f"MemoryKeyStore([{', '.join(mask(k.value) for k in self._keys)}])"

    def adopt(self, previous: KeyStore) -> None:
        """Keep the rotation position and the rest state of keys that are still configured."""
        if not isinstance(previous, MemoryKeyStore):
            return
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

    def report(
        self, key: str, status: int, headers: Mapping[str, str], cooldown: Cooldown
    ) -> Outcome:
        outcome = outcome_of(status)
        if outcome == "rate_limited":
            wait = retry_after_seconds(headers)
            self.rest(key, cooldown.rate_limited_s if wait is None else wait)
        elif outcome == "auth_failed":
            log.warning(
                "provider %s rejected key %s with %d; resting it for %g s",
                self.provider,
                mask(key),
                status,
                cooldown.auth_failed_s,
            )
            self.rest(key, cooldown.auth_failed_s)
        return outcome

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
