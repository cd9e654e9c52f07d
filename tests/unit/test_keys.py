"""Key state and retry pacing: rotation, cooldowns by outcome, Retry-After, backoff."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from email.utils import format_datetime

from mini_llm.config import Cooldown, Retry
from mini_llm.keys import MemoryKeyStore, outcome_of, retry_after_seconds
from mini_llm.proxy import Served, pauses


def test_retry_after_forms() -> None:
    now = time.time()
    assert retry_after_seconds({"retry-after": "12"}) == 12
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after_seconds({"retry-after": "100000"}) == 300  # capped
    date = format_datetime(datetime.fromtimestamp(now + 20, timezone.utc), usegmt=True)
    assert 18 <= (retry_after_seconds({"retry-after": date}, now=now) or 0) <= 21
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


def test_key_store_rotates_skips_resting_and_reports() -> None:
    clock = [100.0]
    store = MemoryKeyStore(
        ("sk-one-000000000001", "sk-two-000000000002", "sk-three-00000003"), clock=lambda: clock[0]
    )
    assert [store.acquire() for _ in range(4)] == [
        "sk-one-000000000001",
        "sk-two-000000000002",
        "sk-three-00000003",
        "sk-one-000000000001",
    ]
    store.rest("sk-two-000000000002", 10)
    assert [store.acquire() for _ in range(3)] == [
        "sk-three-00000003",
        "sk-one-000000000001",
        "sk-three-00000003",
    ]
    store.rest("sk-one-000000000001", 5)
    store.rest("sk-three-00000003", 20)
    assert store.acquire() is None
    assert store.seconds_until_available() == 5
    clock[0] += 5
    assert store.acquire() == "sk-one-000000000001"
    states = store.states()
    assert [s["id"] for s in states] == ["sk-…0001", "sk-…0002", "sk-…0003"]
    assert [s["state"] for s in states] == ["ok", "resting", "resting"]
    assert [s["failures"] for s in states] == [1, 1, 1]


def test_pauses_double_with_jitter_up_to_the_cap() -> None:
    waits = pauses(Retry(attempts=8, backoff_s=0.25, max_backoff_s=1.5))
    taken = [next(waits) for _ in range(8)]
    for pause, base in zip(taken, [0.25, 0.5, 1.0], strict=False):
        assert 0.8 * base <= pause <= 1.2 * base
    assert all(pause <= 1.5 for pause in taken)
    assert taken[-1] == 1.5  # 0.25 * 2**7 with any jitter is over the cap


KEYS = ("sk-one-000000000001", "sk-two-000000000002")


def test_outcome_of_each_status() -> None:
    assert [outcome_of(s) for s in (200, 201, 400, 404, 409, 422)] == [
        "ok",
        "ok",
        "client_error",
        "client_error",
        "client_error",
        "client_error",
    ]
    assert [outcome_of(s) for s in (429, 401, 402, 403)] == [
        "rate_limited",
        "auth_failed",
        "auth_failed",
        "auth_failed",
    ]
    assert {outcome_of(s) for s in (500, 502, 503, 504)} == {"server_error"}


def test_report_rests_keys_as_the_outcome_calls_for() -> None:
    clock = [0.0]
    cooldown = Cooldown(rate_limited_s=30, auth_failed_s=300)
    store = MemoryKeyStore(KEYS, provider="p", clock=lambda: clock[0])
    assert store.report(KEYS[0], 500, {}, cooldown) == "server_error"
    assert store.report(KEYS[0], 400, {}, cooldown) == "client_error"
    assert [s["state"] for s in store.states()] == ["ok", "ok"]  # neither rests a key
    assert store.report(KEYS[0], 429, {"retry-after": "7"}, cooldown) == "rate_limited"
    assert store.seconds_until_available() == 0  # the other key still serves
    assert store.acquire() == KEYS[1]
    assert store.report(KEYS[1], 403, {}, cooldown) == "auth_failed"
    assert store.acquire() is None
    assert store.seconds_until_available() == 7  # Retry-After, not rate_limited_s
    clock[0] = 7
    assert store.acquire() == KEYS[0]
    store.report(KEYS[0], 429, {}, cooldown)
    assert store.seconds_until_available() == 30  # no Retry-After: rate_limited_s
    clock[0] = 36
    assert store.acquire() is None  # the 403 key rests auth_failed_s from t=0
    clock[0] = 300
    assert store.acquire() == KEYS[1]


def test_no_repr_shows_a_key() -> None:
    store = MemoryKeyStore(KEYS, provider="p")
    store.rest(KEYS[0], 5)
    served = Served("p:m", "p", KEYS[1], 2)
    for shown in (repr(store), repr(store._keys), repr(served), str(served)):
        assert "000000000001" not in shown and "000000000002" not in shown, shown
    assert "sk-…0002" in repr(served)
