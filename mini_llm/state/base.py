"""The state interface both backends implement, and the sliding-window arithmetic they share."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from ..keys import KeyStore

WINDOW_S = 60.0  # rpm and tpm are per minute
Kind = Literal["rpm", "tpm"]


@dataclass(frozen=True)
class Budget:
    """The limits of one scope: `provider:NAME` or `key:NAME` (a gateway key's name)."""

    scope: str
    rpm: int | None = None
    tpm: int | None = None

    def checks(self, tokens: int) -> list[tuple[str, Kind, int, int]]:
        """(scope, kind, limit, cost) for each limit this budget sets."""
        out: list[tuple[str, Kind, int, int]] = []
        if self.rpm is not None:
            out.append((self.scope, "rpm", self.rpm, 1))
        if self.tpm is not None:
            out.append((self.scope, "tpm", self.tpm, max(0, tokens)))
        return out


@dataclass(frozen=True)
class Decision:
    """Whether a request may go upstream now; if not, how long to wait and which limit said no."""

    allowed: bool
    retry_after: int = 0  # whole seconds, for Retry-After; at least 1 when denied
    limit: str | None = None  # "<scope>:<name>:<rpm|tpm>", for x-mini-llm-limit

    @property
    def headers(self) -> dict[str, str]:
        if self.allowed or self.limit is None:
            return {}
        return {"Retry-After": str(self.retry_after), "x-mini-llm-limit": self.limit}


ALLOWED = Decision(True)


def denied(limit: str, wait_s: float) -> Decision:
    # Rounded to the millisecond first, so float noise never adds a whole second.
    return Decision(False, max(1, math.ceil(round(wait_s, 3))), limit)


def wait_s(prev: float, curr: float, elapsed: float, limit: int, cost: int) -> float:
    """Seconds until `cost` more fits under `limit` in a sliding minute; 0 when it fits now.

    The minute is approximated by two fixed windows: the previous one weighted by the part
    of it still inside the last 60 s, plus the current one (Cloudflare's and nginx's way). A
    cost above the whole limit counts as the limit, so one big request can still pass when
    the window is empty. Mirrored line by line by the Lua script in redis.py.
    """
    cost = min(cost, limit)
    if prev * (1.0 - elapsed) + curr + cost <= limit:
        return 0.0
    room = limit - curr - cost
    if room >= 0 and prev > 0:  # the previous window's share fades enough within this one
        return (1.0 - room / prev - elapsed) * WINDOW_S
    # Not before the next window, where this one becomes the fading previous one.
    later = 1.0 - (limit - cost) / curr if curr > 0 else 0.0
    return (1.0 - elapsed + max(0.0, later)) * WINDOW_S


def estimate_tokens(body: bytes) -> int:
    """A cheap estimate of a request's input tokens for tpm admission: about 4 bytes a token."""
    return max(1, len(body) // 4)


class State(Protocol):
    """Key cooldowns, rate-limit counters and cache entries: per process or shared by replicas.

    No method raises into the request path: a shared backend that fails or is slow answers
    from local memory and counts the failure in `errors`.
    """

    errors: int  # failed or timed-out calls to the shared store: mini_llm_state_errors_total

    @property
    def shared(self) -> bool:
        """Whether other processes see this state (Redis) or only this one (memory)."""

    async def start(self) -> None:
        """Begin background work (the cooldown mirror); never fails for a dead server."""

    async def close(self) -> None:
        """Stop background work and release connections."""

    def key_store(self, keys: tuple[str, ...], provider: str) -> KeyStore:
        """A KeyStore for one provider; a shared state shares its rests with other replicas."""

    async def admit(self, budgets: Sequence[Budget], tokens: int = 0) -> Decision:
        """Count one request of `tokens` estimated tokens against every budget, or none of them.

        All or nothing: when any limit denies, no counter moves, so a request refused by a
        gateway key's limit does not use up the provider's.
        """

    async def settle(self, budgets: Sequence[Budget], estimate: int, actual: int) -> None:
        """Correct the tpm counters once the real usage is known (output included)."""

    async def cache_get(self, key: str) -> bytes | None:
        """A stored answer, or None."""

    async def cache_set(self, key: str, value: bytes, ttl_s: float) -> bool:
        """Store an answer for ttl_s seconds; False when it is over max_body_bytes."""
