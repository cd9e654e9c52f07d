"""Balancing strategies and circuit breakers, without sockets."""

from __future__ import annotations

import random
from collections import Counter

from mini_llm.balance import Balancer, Circuit
from mini_llm.config import Health, Target

A = Target("a", "m", 3.0)
B = Target("b", "m", 1.0)
C = Target("c", "m", 0.0)


def firsts(balancer: Balancer, strategy: str, targets: list[Target], n: int = 4000) -> Counter[str]:
    return Counter(
        balancer.order(strategy, targets, lambda t: True)[0].provider  # type: ignore[arg-type]
        for _ in range(n)
    )


def test_fallback_keeps_the_order() -> None:
    assert Balancer().order("fallback", [B, A], lambda t: True) == [B, A]


def test_weighted_follows_the_weights_and_keeps_the_rest_as_fallbacks() -> None:
    balancer = Balancer(random.Random(7))
    counts = firsts(balancer, "weighted", [A, B, C])
    assert counts["c"] == 0  # weight 0: never first, still a fallback
    assert 0.70 < counts["a"] / 4000 < 0.80  # 3 : 1
    order = balancer.order("weighted", [A, B, C], lambda t: True)
    assert sorted(t.provider for t in order) == ["a", "b", "c"]


def test_unusable_targets_are_never_picked_first() -> None:
    balancer = Balancer(random.Random(1))
    counts = Counter(
        balancer.order("weighted", [A, B], lambda t: t.provider != "a")[0].provider
        for _ in range(200)
    )
    assert counts == {"b": 200}


def test_least_busy_picks_the_fewest_in_flight() -> None:
    balancer = Balancer(random.Random(3))
    held = [balancer.stats(A).hold(), balancer.stats(A).hold(), balancer.stats(B).hold()]
    assert balancer.order("least_busy", [A, B], lambda t: True)[0] is B
    more = [balancer.stats(B).hold(), balancer.stats(B).hold()]
    assert balancer.order("least_busy", [A, B], lambda t: True)[0] is A
    for stats in held + more:
        stats.release()
    assert balancer.stats(A).in_flight == 0 and balancer.stats(B).in_flight == 0
    assert set(firsts(balancer, "least_busy", [A, B], 200)) == {"a", "b"}  # ties spread


def test_latency_prefers_the_fastest_and_keeps_exploring() -> None:
    balancer = Balancer(random.Random(5))
    balancer.stats(A).observe(0.5)
    balancer.stats(B).observe(0.05)
    counts = firsts(balancer, "latency", [A, B])
    assert counts["b"] > counts["a"] > 0
    assert counts["a"] / 4000 < 0.1


def test_moving_average() -> None:
    balancer = Balancer()
    stats = balancer.stats(A)
    stats.observe(1.0)
    stats.observe(0.0)
    assert stats.ttfb_s == 0.7


def test_circuit_opens_after_failures_in_a_row_and_probes_once() -> None:
    now = [0.0]
    circuit = Circuit(clock=lambda: now[0])
    health = Health(failures=3, open_s=10)
    for _ in range(2):
        circuit.record("server_error", health)
    circuit.record("ok", health)  # a success resets the count
    for outcome in ("server_error", "connect_error", "rate_limited", "auth_failed"):
        circuit.record(outcome, health)  # type: ignore[arg-type]
    assert circuit.state == "closed"  # 429/401 do not count
    circuit.record("timeout", health)
    assert circuit.state == "open" and not circuit.allow()
    assert circuit.shown()["circuit"] == "open" and circuit.shown()["until"]
    now[0] = 10
    assert circuit.allow()  # the probe
    assert circuit.state == "half_open" and not circuit.allow()  # only one at a time
    circuit.record("server_error", health)  # the probe failed: open again
    assert circuit.state == "open" and not circuit.allow()
    now[0] = 20
    assert circuit.allow()
    circuit.record("ok", health)
    assert circuit.state == "closed" and circuit.allow() and circuit.allow()


def test_a_cancelled_probe_lets_the_next_one_through() -> None:
    now = [0.0]
    circuit = Circuit(clock=lambda: now[0])
    circuit.record("server_error", Health(failures=1, open_s=1))
    now[0] = 1
    assert circuit.allow()
    circuit.release()
    assert circuit.allow()


def test_balanced_aliases_load_with_their_strategy_and_weights(tmp_path: object) -> None:
    from mini_llm.routing import compile_routes

    from ..helpers import load

    config = load(
        tmp_path,  # type: ignore[arg-type]
        """\
        version: 1
        defaults:
          health: {failures: 3}
        providers:
          a: {base_url: "http://127.0.0.1:1/v1", auth: none, health: {open_s: 5}}
          b: {base_url: "http://127.0.0.1:2/v1", auth: none}
        routes:
          aliases:
            smart:
              strategy: weighted
              targets: [{target: a:x, weight: 3}, b:y]
            plain: {targets: [a:x, b:y]}
            chain: [a:x, b:y]
        """,
    )
    route = compile_routes(config).resolve("smart")
    assert route.strategy == "weighted"
    assert [(str(t), t.weight) for t in route.targets] == [("a:x", 3.0), ("b:y", 1.0)]
    assert compile_routes(config).resolve("plain").strategy == "fallback"
    assert compile_routes(config).resolve("chain").strategy == "fallback"
    assert config.providers["a"].health == Health(failures=3, open_s=5)
    assert config.providers["b"].health == Health(failures=3, open_s=30)
