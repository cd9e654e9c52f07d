"""The memory backend and the pieces both backends share: windows, cache, keys (no sockets)."""

from __future__ import annotations

import pytest

from mini_llm.config import Cache, Cooldown, State
from mini_llm.keys import MemoryKeyStore
from mini_llm.state import (
    Budget,
    CachedAnswer,
    MemoryState,
    RedisState,
    SharedKeyStore,
    cache_key,
    estimate_tokens,
    key_id,
    open_state,
)
from mini_llm.state.base import wait_s
from mini_llm.state.cooldowns import Cooldowns


class Clock:
    def __init__(self, now: float = 6000.0) -> None:  # the start of a minute
        self.now = now

    def __call__(self) -> float:
        return self.now


# The sliding minute -----------------------------------------------------------------------


def test_wait_is_zero_while_there_is_room() -> None:
    assert wait_s(prev=0, curr=4, elapsed=0.5, limit=5, cost=1) == 0


def test_previous_window_fades() -> None:
    # 10 in the last minute, none now, limit 10: 5 more fit once half of them faded out.
    assert wait_s(prev=10, curr=0, elapsed=0.25, limit=10, cost=5) == pytest.approx(15.0)


def test_full_current_window_waits_for_the_next_one() -> None:
    # 10 this minute, limit 10, halfway: the rest of this minute, then until 1 fades out.
    assert wait_s(prev=0, curr=10, elapsed=0.5, limit=10, cost=1) == pytest.approx(30.0 + 6.0)


def test_a_cost_over_the_whole_limit_counts_as_the_limit() -> None:
    assert wait_s(prev=0, curr=0, elapsed=0.0, limit=100, cost=1000) == 0


def test_estimate_tokens() -> None:
    assert estimate_tokens(b"") == 1
    assert estimate_tokens(b"x" * 400) == 100


# Admission ----------------------------------------------------------------------------------


async def test_rpm_holds_and_says_which_limit_and_how_long() -> None:
    clock = Clock()
    state = MemoryState(clock=clock)
    budget = [Budget("provider:openai", rpm=3)]
    for _ in range(3):
        assert (await state.admit(budget)).allowed
    clock.now += 15
    decision = await state.admit(budget)
    assert not decision.allowed
    assert decision.limit == "provider:openai:rpm"
    # Full window a quarter in: 45 s to its end, then 20 s more until one of three fades.
    assert decision.retry_after == 65
    assert decision.headers == {"Retry-After": "65", "x-mini-llm-limit": "provider:openai:rpm"}
    clock.now += 65
    assert (await state.admit(budget)).allowed


async def test_admission_is_all_or_nothing() -> None:
    state = MemoryState(clock=Clock())
    key = Budget("key:passy", rpm=1)
    provider = Budget("provider:openai", rpm=2)
    assert (await state.admit([key, provider])).allowed
    refused = await state.admit([key, provider])
    assert refused.limit == "key:passy:rpm"
    # The refusal did not use the provider's budget: another tenant still gets both.
    assert (await state.admit([Budget("key:other", rpm=5), provider])).allowed
    assert not (await state.admit([provider])).allowed


async def test_tpm_admits_an_estimate_and_settles_to_the_real_usage() -> None:
    clock = Clock()
    state = MemoryState(clock=clock)
    budget = [Budget("provider:openai", tpm=1000)]
    assert (await state.admit(budget, tokens=600)).allowed
    assert (await state.admit(budget, tokens=600)).limit == "provider:openai:tpm"
    await state.settle(budget, estimate=600, actual=100)  # the answer was short
    assert (await state.admit(budget, tokens=600)).allowed
    await state.settle(budget, estimate=600, actual=5000)  # or long: never below zero later
    assert not (await state.admit(budget, tokens=1)).allowed


async def test_no_limits_means_no_counting() -> None:
    state = MemoryState()
    assert (await state.admit([Budget("provider:x")], tokens=10**9)).allowed
    assert (await state.admit([])).allowed


# Cache ----------------------------------------------------------------------------------------


async def test_cache_expires_and_is_bounded() -> None:
    clock = Clock()
    state = MemoryState(max_entries=2, max_body_bytes=10, clock=clock)
    assert await state.cache_set("a", b"1", ttl_s=5)
    assert await state.cache_set("b", b"2", ttl_s=60)
    assert await state.cache_get("a") == b"1"  # a is now the most recently used
    assert await state.cache_set("c", b"3", ttl_s=60)
    assert await state.cache_get("b") is None  # the least recently used went
    assert not await state.cache_set("big", b"x" * 11, ttl_s=60)
    assert await state.cache_get("big") is None
    clock.now += 5
    assert await state.cache_get("a") is None
    assert await state.cache_get("c") == b"3"
    assert len(state) == 1


def test_cache_key_is_canonical_and_per_tenant() -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "n": 1}
    same = {"n": 1, "messages": [{"content": "hi", "role": "user"}], "model": "gpt-4o"}
    key = cache_key("/v1/chat/completions", ["openai:gpt-4o"], body, "passy")
    assert key == cache_key("/v1/chat/completions", ["openai:gpt-4o"], same, "passy")
    assert key != cache_key("/v1/chat/completions", ["openai:gpt-4o"], body, "other")
    assert key != cache_key("/v1/chat/completions", ["azure:gpt-4o"], body, "passy")
    assert key != cache_key("/v1/completions", ["openai:gpt-4o"], body, "passy")
    assert key != cache_key("/v1/chat/completions", ["openai:gpt-4o"], {**body, "n": 2}, "passy")
    assert cache_key("/v1/x", ["a:b"], b"raw", None) != cache_key("/v1/x", ["a:b"], b"raw2", None)
    assert len(key) == 64


def test_cached_answer_round_trips() -> None:
    answer = CachedAnswer(200, (("content-type", "text/event-stream"),), b"data: 1\n\ndata: 2\n\n")
    assert CachedAnswer.from_bytes(answer.to_bytes()) == answer
    assert CachedAnswer.from_bytes(b"not an answer") is None
    assert CachedAnswer.from_bytes(b"{}\nbody") is None


# Keys ------------------------------------------------------------------------------------------


KEYS = ("sk-aaaaaaaaaaaaaaaa1111", "sk-bbbbbbbbbbbbbbbb2222")


def test_memory_state_gives_the_plain_key_store() -> None:
    store = MemoryState().key_store(KEYS, "openai")
    assert type(store) is MemoryKeyStore and store.keys == KEYS


def test_shared_key_store_rests_through_the_mirror() -> None:
    written: list[tuple[str, str, float]] = []
    mirror = Cooldowns(lambda *rest: written.append(rest))
    one = SharedKeyStore(KEYS, "openai", mirror)
    other = SharedKeyStore(KEYS, "openai", mirror)  # another store reading the same mirror
    one.report(KEYS[0], 429, {"retry-after": "30"}, Cooldown())
    assert [(p, i) for p, i, _ in written] == [("openai", key_id(KEYS[0]))]
    assert KEYS[0] not in repr(written) and KEYS[0] not in repr(one)
    assert [other.acquire() for _ in range(3)] == [KEYS[1]] * 3
    assert other.states()[0]["state"] == "resting"


def test_mirror_loads_what_redis_holds_and_forgets_past_rests() -> None:
    import time

    mirror = Cooldowns(lambda *rest: None)
    store = SharedKeyStore(KEYS, "openai", mirror)
    assert mirror.providers == ("openai",)
    mirror.load("openai", {key_id(KEYS[1]): time.time() + 60, "gone": time.time() - 1})
    assert set(mirror.resting("openai")) == {key_id(KEYS[1])}
    assert [store.acquire() for _ in range(2)] == [KEYS[0]] * 2
    assert store.seconds_until_available() == 0


def test_shared_store_adopts_a_memory_store_across_a_reload() -> None:
    clock = Clock(100.0)  # a monotonic-style clock, far from the wall clock
    before = MemoryKeyStore(KEYS, "openai", clock=clock)
    before.rest(KEYS[0], 30)
    after = SharedKeyStore(KEYS, "openai", Cooldowns(lambda *rest: None))
    after.adopt(before)
    assert after.acquire() == KEYS[1]
    assert after.states()[0]["failures"] == 1
    assert after.states()[0]["state"] == "resting"


# Choosing the backend ---------------------------------------------------------------------------


async def test_open_state_picks_the_backend_without_connecting() -> None:
    assert isinstance(open_state(State(), Cache()), MemoryState)
    state = open_state(State(redis="redis://:pw-0123456789abcdef@127.0.0.1:1/0"), Cache())
    assert isinstance(state, RedisState) and state.shared
    assert "pw-0123456789abcdef" not in repr(state)
    await state.close()
