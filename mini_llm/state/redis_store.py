"""State in Redis, shared by replicas; every call bounded, and local memory when it fails.

Counters are changed only by Lua scripts (one round trip, atomic), so N replicas hold one
limit, not N times it. Every call is bounded by `timeout_s` (50 ms); a call that fails or
times out makes that decision from local memory, counts in `errors`, warns at most once a
minute, and keeps Redis out of the path for `retry_s` so an outage costs no request a
connect attempt. redis-py reconnects on the first call after that; nothing needs Redis up
to start.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..keys import KeyStore
from ..masking import mask_userinfo
from .base import ALLOWED, WINDOW_S, Budget, Decision, denied
from .cooldowns import Cooldowns, SharedKeyStore
from .memory import MemoryState

log = logging.getLogger("mini_llm")

T = TypeVar("T")
WARN_EVERY_S = 60.0

# The arithmetic of base.wait_s, in Redis's time, over keys PREFIX rl:SCOPE:KIND:MINUTE.
# ARGV: prefix, then (scope, kind, limit, cost) per limit. All or nothing: nothing is
# counted unless every limit has room. Returns {allowed, wait in ms, 1-based index of the
# limit with the longest wait}.
ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local W = tonumber(ARGV[2])
local index = math.floor(now / W)
local elapsed = (now - index * W) / W
local prefix = ARGV[1]
local n = (#ARGV - 2) / 4
local worst, worst_i = 0, 0
local counted = {}
for i = 1, n do
  local b = 2 + (i - 1) * 4
  local limit, cost = tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4])
  if cost > limit then cost = limit end
  local base = prefix .. 'rl:' .. ARGV[b + 1] .. ':' .. ARGV[b + 2] .. ':'
  local prev = tonumber(redis.call('GET', base .. string.format('%d', index - 1)) or 0)
  local curr = tonumber(redis.call('GET', base .. string.format('%d', index)) or 0)
  local wait = 0
  if prev * (1 - elapsed) + curr + cost > limit then
    local room = limit - curr - cost
    if room >= 0 and prev > 0 then
      wait = (1 - room / prev - elapsed) * W
    else
      local later = 0
      if curr > 0 then later = math.max(0, 1 - (limit - cost) / curr) end
      wait = (1 - elapsed + later) * W
    end
  end
  if wait > worst then worst, worst_i = wait, i end
  counted[i] = {base .. string.format('%d', index), cost}
end
if worst_i > 0 then return {0, math.floor(worst * 1000 + 0.5), worst_i} end
for i = 1, n do
  redis.call('INCRBY', counted[i][1], counted[i][2])
  redis.call('EXPIRE', counted[i][1], 2 * W + 5)
end
return {1, 0, 0}
"""

# ARGV: prefix, window, delta, then the scopes whose tpm the real usage corrects.
SETTLE = """
local t = redis.call('TIME')
local W = tonumber(ARGV[2])
local index = math.floor(tonumber(t[1]) / W)
local delta = tonumber(ARGV[3])
for i = 4, #ARGV do
  local key = ARGV[1] .. 'rl:' .. ARGV[i] .. ':tpm:' .. string.format('%d', index)
  if redis.call('INCRBY', key, delta) < 0 then redis.call('SET', key, 0) end
  redis.call('EXPIRE', key, 2 * W + 5)
end
return 1
"""

# KEYS[1]: the provider's hash of key id -> resting-until (ms since the epoch).
# ARGV: key id, until, how long the hash must live. A later rest never shortens one.
REST = """
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or 0)
if tonumber(ARGV[2]) > current then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return 1
"""


class _Failed:
    """A Redis call that did not answer in time (or at all)."""


FAILED = _Failed()


class RedisState:
    """Cooldowns, limits and cache in one Redis shared by every replica."""

    def __init__(
        self,
        url: str,
        max_entries: int = 1000,
        max_body_bytes: int = 1024 * 1024,
        *,
        timeout_s: float = 0.05,
        poll_s: float = 0.05,
        retry_s: float = 0.5,
        prefix: str = "mini-llm:",
        max_connections: int = 32,
    ) -> None:
        self.errors = 0  # failed or timed-out Redis calls: mini_llm_state_errors_total
        self.fallbacks = 0  # decisions made from local memory instead
        self.local = MemoryState(max_entries, max_body_bytes)
        self.max_body_bytes = max_body_bytes
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self.retry_s = retry_s
        self.prefix = prefix
        self.cooldowns = Cooldowns(self._write_rest)
        self._url = url
        # A bounded pool that makes a burst wait its turn (within the 50 ms) rather than open
        # a connection per request or fail past redis-py's default of 100. No retries inside
        # redis-py: the 50 ms bound and the memory fallback are the policy.
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=None,
            retry=Retry(NoBackoff(), 0),
            socket_connect_timeout=1.0,
            socket_timeout=1.0,
        )
        self._redis: Redis = Redis(connection_pool=pool)
        self._admit = self._redis.register_script(ADMIT)
        self._settle = self._redis.register_script(SETTLE)
        self._rest = self._redis.register_script(REST)
        self._down_until = 0.0
        self._warned_at: float | None = None
        self._unsent: dict[tuple[str, str], float] = {}  # rests Redis has not taken yet
        self._tasks: set[asyncio.Task[None]] = set()
        self._poller: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"RedisState({mask_userinfo(self._url)!r})"

    @property
    def shared(self) -> bool:
        return True

    async def start(self) -> None:
        """Connect and load the scripts (1 s at most, so the first requests find them ready),
        then poll for rests in the background."""
        await self._warm()
        if self._poller is None:
            self._poller = asyncio.get_running_loop().create_task(self._poll_forever())

    async def _warm(self) -> bool:
        """Load the scripts and open a connection before requests need them (1 s allowed)."""

        async def load() -> None:
            for script in (self._admit, self._settle, self._rest):
                await self._redis.script_load(script.script)

        return not isinstance(await self._call(load, timeout_s=1.0), _Failed)

    async def close(self) -> None:
        tasks = [*self._tasks, *([self._poller] if self._poller else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._poller = None
        await self._redis.aclose(close_connection_pool=True)

    # Every Redis call goes through here -----------------------------------------------------

    @property
    def available(self) -> bool:
        """False while Redis is kept out of the path after a failure."""
        return time.monotonic() >= self._down_until

    async def _call(
        self, operation: Callable[[], Awaitable[T]], timeout_s: float | None = None
    ) -> T | _Failed:
        if not self.available:
            return FAILED
        try:
            result = await asyncio.wait_for(operation(), timeout_s or self.timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # whatever Redis does, the request goes on without it
            self._failed(exc)
            return FAILED
        if self._warned_at is not None and self._down_until:
            self._down_until = 0.0
            log.info("state: Redis at %s answers again", mask_userinfo(self._url))
        return result

    def _failed(self, exc: Exception) -> None:
        self.errors += 1
        now = time.monotonic()
        self._down_until = now + self.retry_s
        if self._warned_at is None or now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            reason = f"no answer within {self.timeout_s * 1000:.0f} ms"
            if not isinstance(exc, asyncio.TimeoutError):
                reason = f"{type(exc).__name__}: {exc}"
            log.warning(
                "state: Redis at %s failed (%s); limits, cooldowns and the cache use this "
                "process's memory until it answers (warned at most once a minute)",
                mask_userinfo(self._url),
                reason,
            )

    # Key cooldowns ---------------------------------------------------------------------------

    def key_store(self, keys: tuple[str, ...], provider: str) -> KeyStore:
        return SharedKeyStore(keys, provider, self.cooldowns)

    def _write_rest(self, provider: str, ident: str, until: float) -> None:
        self._unsent[(provider, ident)] = max(until, self._unsent.get((provider, ident), 0.0))
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a synchronous caller): the next poll sends it
            return
        task = loop.create_task(self._send_rests())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_rests(self) -> None:
        pending, self._unsent = self._unsent, {}
        if not pending:
            return
        now = time.time()

        async def send() -> None:
            async with self._redis.pipeline(transaction=False) as pipe:
                for (provider, ident), until in pending.items():
                    if until > now:
                        live_ms = int((until - now) * 1000) + 1000
                        hash_key = f"{self.prefix}cool:{provider}"
                        await self._rest(
                            keys=[hash_key], args=[ident, int(until * 1000), live_ms], client=pipe
                        )
                await pipe.execute()

        if await self._call(send) is FAILED:
            for item, until in pending.items():  # sent again once Redis answers
                self._unsent[item] = max(until, self._unsent.get(item, 0.0))

    async def _read_rests(self, providers: Sequence[str]) -> list[dict[bytes, bytes]]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for provider in providers:
                pipe.hgetall(f"{self.prefix}cool:{provider}")
            result: list[dict[bytes, bytes]] = await pipe.execute()
            return result

    async def poll(self) -> bool:
        """Refresh the mirror of rests once (and send rests Redis missed); True if it answered."""
        providers = self.cooldowns.providers
        if not providers or not self.available:
            return False
        result = await self._call(lambda: self._read_rests(providers))
        if isinstance(result, _Failed):
            return False
        for provider, raw in zip(providers, result, strict=True):
            self.cooldowns.load(provider, _rests(raw))
        if self._unsent:
            await self._send_rests()
        return True

    async def _poll_forever(self) -> None:
        await self._warm()
        while True:
            await asyncio.sleep(self.poll_s)
            await self.poll()

    # Rate limits -----------------------------------------------------------------------------

    async def admit(self, budgets: Sequence[Budget], tokens: int = 0) -> Decision:
        checks = [c for b in budgets for c in b.checks(tokens)]
        if not checks:
            return ALLOWED
        args: list[Any] = [self.prefix, int(WINDOW_S)]
        for check in checks:
            args.extend(check)
        result = await self._call(lambda: self._admit(args=args))
        if isinstance(result, _Failed):
            self.fallbacks += 1
            return self.local.admit_now(budgets, tokens)
        allowed, wait_ms, index = (int(x) for x in result)
        if allowed:
            return ALLOWED
        scope, kind, _, _ = checks[index - 1]
        return denied(f"{scope}:{kind}", wait_ms / 1000.0)

    async def settle(self, budgets: Sequence[Budget], estimate: int, actual: int) -> None:
        scopes = [b.scope for b in budgets if b.tpm is not None]
        delta = actual - estimate
        if not scopes or delta == 0:
            return
        args: list[str | int] = [self.prefix, int(WINDOW_S), delta, *scopes]
        if isinstance(await self._call(lambda: self._settle(args=args)), _Failed):
            self.fallbacks += 1
            self.local.settle_now(budgets, estimate, actual)

    # Cache -----------------------------------------------------------------------------------

    async def cache_get(self, key: str) -> bytes | None:
        result = await self._call(lambda: self._redis.get(f"{self.prefix}cache:{key}"))
        if isinstance(result, _Failed):
            self.fallbacks += 1
            return self.local.cache_get_now(key)
        return result if isinstance(result, bytes) else None

    async def cache_set(self, key: str, value: bytes, ttl_s: float) -> bool:
        if len(value) > self.max_body_bytes:
            return False
        millis = max(1, int(ttl_s * 1000))
        name = f"{self.prefix}cache:{key}"
        result = await self._call(lambda: self._redis.set(name, value, px=millis))
        if isinstance(result, _Failed):
            self.fallbacks += 1
            return self.local.cache_set_now(key, value, ttl_s)
        return True


def _rests(raw: Mapping[bytes, bytes]) -> dict[str, float]:
    out = {}
    for ident, until in raw.items():
        try:
            out[ident.decode()] = int(until) / 1000.0
        except ValueError:
            continue
    return out
