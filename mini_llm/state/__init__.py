"""Key cooldowns, rate-limit counters and cache entries: in memory, or in Redis for replicas.

    base.py         the State interface, Budget and Decision, the sliding-window arithmetic
    memory.py       MemoryState: this process's memory (the default, and Redis's fallback)
    redis_store.py  RedisState: Lua-atomic counters, shared cache, every call bounded to 50 ms
    cooldowns.py    SharedKeyStore: a KeyStore whose rests replicas see within 100 ms
    cache.py        cache_key and CachedAnswer

`open_state(config)` picks the backend from `state.redis`; the app owns it (start/close).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..config import Cache
from ..config import State as StateSettings
from .base import ALLOWED, Budget, Decision, State, estimate_tokens
from .cache import CachedAnswer, cache_key, canonical_json
from .cooldowns import SharedKeyStore, key_id
from .memory import MemoryState

if TYPE_CHECKING:
    from .redis_store import RedisState

__all__ = [
    "ALLOWED",
    "Budget",
    "CachedAnswer",
    "Decision",
    "MemoryState",
    "RedisState",
    "SharedKeyStore",
    "State",
    "cache_key",
    "canonical_json",
    "estimate_tokens",
    "key_id",
    "open_state",
]


def __getattr__(name: str) -> Any:
    if name == "RedisState":  # imported on first use: see open_state
        from .redis_store import RedisState

        return RedisState
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_state(settings: StateSettings, cache: Cache) -> State:
    """Redis when `state.redis` is set, else this process's memory. Connects lazily."""
    if settings.redis:
        from .redis_store import RedisState  # the Redis client costs ~7 MB: only when used

        return RedisState(settings.redis, cache.max_entries, cache.max_body_bytes)
    return MemoryState(cache.max_entries, cache.max_body_bytes)
