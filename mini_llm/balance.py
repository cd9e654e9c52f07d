"""Balancing and provider health: the order targets are tried in, and circuit breakers.

`Balancer.order` puts a route's targets in the order `Call.forward` tries them: the
strategy picks the first (by weight, fewest in flight, or lowest time to first byte), the
others follow as a fallback chain would. `Circuit` is a provider's breaker: `failures`
retryable outcomes in a row open it for `open_s`, then one probe is let through and its
outcome closes or reopens it. Both live across reloads of the table (see pools.py).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any, Literal

from .config import Health, Strategy, Target
from .keys import AFTER_PAUSE, Outcome

CircuitState = Literal["closed", "open", "half_open"]
# A share of `latency` picks that go to another target, so every average stays current.
EXPLORE_SHARE = 0.1
# Weight of the newest time to first byte in a target's moving average.
EWMA_ALPHA = 0.3
# Outcomes that count against a provider's health; 429 and 401/403 rest keys instead.
_FAILURES: frozenset[Outcome] = AFTER_PAUSE | {"timeout"}


class Circuit:
    """One provider's circuit breaker (`defaults.health`, overridable per provider)."""

    __slots__ = ("_clock", "_probing", "failures", "opened_until", "state")

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.state: CircuitState = "closed"
        self.failures = 0  # retryable outcomes in a row
        self.opened_until = 0.0
        self._probing = False

    def allow(self) -> bool:
        """Whether a request may go to the provider now; an expired open circuit lets one probe."""
        if self.state == "closed":
            return True
        if self.state == "open":
            if self._clock() < self.opened_until:
                return False
            self.state = "half_open"
        if self._probing:
            return False
        self._probing = True
        return True

    def record(self, outcome: Outcome, health: Health) -> None:
        """Count one try's outcome: a success closes the circuit, failures in a row open it."""
        if outcome in _FAILURES:
            self.failures += 1
            if self.state == "half_open" or self.failures >= health.failures:
                self.state = "open"
                self.opened_until = self._clock() + health.open_s
            self._probing = False
        elif outcome in ("ok", "client_error"):
            self.failures = 0
            self.state = "closed"
            self._probing = False
        else:  # rate limited or rejected key: says nothing of the provider's health
            self._probing = False

    def release(self) -> None:
        """A probe that ended without an outcome (cancelled): let the next one through."""
        self._probing = False

    def shown(self) -> dict[str, Any]:
        """`circuit` and `until` for /health."""
        until = None
        state = self.state
        if state == "open":
            remaining = self.opened_until - self._clock()
            if remaining <= 0:
                state = "half_open"  # the next request is its probe
            else:
                when = datetime.fromtimestamp(time.time() + remaining, timezone.utc)
                until = when.isoformat(timespec="seconds")
        return {"circuit": state, "until": until}


class TargetStats:
    """Requests in flight to one target and its moving average of time to first byte."""

    __slots__ = ("in_flight", "ttfb_s")

    def __init__(self) -> None:
        self.in_flight = 0
        self.ttfb_s: float | None = None  # None until a first answer

    def hold(self) -> TargetStats:
        """One more request in flight to the target, until `release`."""
        self.in_flight += 1
        return self

    def release(self) -> None:
        self.in_flight -= 1

    def observe(self, seconds: float) -> None:
        previous = self.ttfb_s
        self.ttfb_s = seconds if previous is None else previous + EWMA_ALPHA * (seconds - previous)


class Balancer:
    """Per-target statistics and the order a strategy gives a route's targets."""

    __slots__ = ("_random", "_stats")

    def __init__(self, rng: random.Random | None = None) -> None:
        self._stats: dict[str, TargetStats] = {}
        self._random = rng or random.Random()

    def stats(self, target: Target) -> TargetStats:
        key = f"{target.provider}:{target.model}"
        found = self._stats.get(key)
        if found is None:
            found = self._stats[key] = TargetStats()
        return found

    def order(
        self, strategy: Strategy, targets: Sequence[Target], usable: Callable[[Target], bool]
    ) -> Sequence[Target]:
        """The targets in the order to try them: the strategy's pick first, then the rest."""
        if strategy == "fallback" or len(targets) < 2:
            return targets
        candidates = [t for t in targets if usable(t)]
        if not candidates:
            return targets
        first = self._pick(strategy, candidates)
        return [first, *(t for t in targets if t is not first)]

    def _pick(self, strategy: Strategy, candidates: list[Target]) -> Target:
        if strategy == "weighted":
            weights = [t.weight for t in candidates]
            if not any(weights):
                return candidates[0]
            return self._random.choices(candidates, weights=weights)[0]
        if strategy == "least_busy":
            fewest = min(self.stats(t).in_flight for t in candidates)
            tied = [t for t in candidates if self.stats(t).in_flight == fewest]
            return tied[0] if len(tied) == 1 else self._random.choice(tied)
        # latency: the lowest average, a target never measured first, and some exploring
        if len(candidates) > 1 and self._random.random() < EXPLORE_SHARE:
            return self._random.choice(candidates)
        return min(candidates, key=lambda t: self.stats(t).ttfb_s or 0.0)
