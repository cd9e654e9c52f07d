"""Rate limits, the response cache, and state shared by gateways on one real Redis."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from ..conftest import GatewayFactory
from ..helpers import GatewayProcess, RedisServer, wait_for
from ..mock_upstream import MockUpstream

GATEWAY_KEY = "gw-limited-0123456789ab"
KEY_A = "sk-shared-a-000000000001"
KEY_B = "sk-shared-b-000000000002"


def table(mock: MockUpstream, redis: str = "", cache: bool = True) -> str:
    return f"""version: 1
server:
  reload: false
  auth:
    keys:
      - {{name: tenant, key: "{GATEWAY_KEY}", limits: {{rpm: 3}}}}
      - other-key-0123456789abcd
state: {{redis: "{redis}"}}
cache: {{enabled: {str(cache).lower()}, ttl_s: 60}}
providers:
  capped:
    base_url: {mock.url}
    auth: none
    limits: {{rpm: 2}}
  spare:
    base_url: {mock.url}
    auth: none
  keyed:
    base_url: {mock.url}
    keys: [{KEY_A}, {KEY_B}]
    cooldown: {{rate_limited_s: 60}}
routes:
  aliases:
    capped: capped:m
    chain: [capped:m, spare:s]
"""


def post(
    gateway: GatewayProcess, model: str, key: str = "other-key-0123456789abcd", **extra: object
) -> httpx.Response:
    headers = {"x-mini-llm-key": key}
    headers.update(extra.pop("headers", {}))  # type: ignore[arg-type]
    return httpx.post(
        gateway.url + "/v1/chat/completions",
        json={"model": model, "messages": [], **extra},
        headers=headers,
        timeout=10,
    )


def test_provider_limit_gives_429_and_chains_skip_it(
    start_gateway: GatewayFactory, upstream: MockUpstream
) -> None:
    gateway = start_gateway(table(upstream, cache=False))
    assert [post(gateway, "capped").status_code for _ in range(2)] == [200, 200]
    over = post(gateway, "capped")
    assert over.status_code == 429
    assert over.headers["x-mini-llm-limit"] == "provider:capped:rpm"
    assert int(over.headers["Retry-After"]) >= 1
    assert len(upstream.requests) == 2  # nothing went upstream for the third
    assert post(gateway, "chain").headers["x-mini-llm-route"] == "spare:s"


def test_gateway_key_limit(start_gateway: GatewayFactory, upstream: MockUpstream) -> None:
    gateway = start_gateway(table(upstream, cache=False))
    statuses = [post(gateway, "spare:x", GATEWAY_KEY).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    assert post(gateway, "spare:x", GATEWAY_KEY).headers["x-mini-llm-limit"] == "key:tenant:rpm"
    assert post(gateway, "spare:x").status_code == 200  # another key has its own budget


def test_cache_hit_miss_and_bypass(start_gateway: GatewayFactory, upstream: MockUpstream) -> None:
    gateway = start_gateway(table(upstream))
    first = post(gateway, "spare:x", temperature=0)
    assert first.headers["x-mini-llm-cache"] == "miss"
    second = post(gateway, "spare:x", temperature=0)
    assert second.headers["x-mini-llm-cache"] == "hit"
    assert second.json() == first.json()
    assert len(upstream.requests) == 1
    bypass = post(gateway, "spare:x", temperature=0, headers={"Cache-Control": "no-cache"})
    assert bypass.headers["x-mini-llm-cache"] == "bypass"
    assert post(gateway, "spare:x", GATEWAY_KEY, temperature=0).headers["x-mini-llm-cache"] == (
        "miss"  # tenants never share entries
    )
    assert len(upstream.requests) == 3


def test_a_streamed_answer_is_replayed_as_a_stream(
    start_gateway: GatewayFactory, upstream: MockUpstream
) -> None:
    gateway = start_gateway(table(upstream))
    bodies = []
    for verdict in ("miss", "hit"):
        with httpx.stream(
            "POST",
            gateway.url + "/v1/chat/completions",
            json={"model": "spare:x", "stream": True, "messages": []},
            headers={"x-mini-llm-key": "other-key-0123456789abcd"},
        ) as response:
            bodies.append(response.read())
            assert response.headers["x-mini-llm-cache"] == verdict
            assert response.headers["content-type"].startswith("text/event-stream")
    assert bodies[0] == bodies[1] and b"data: [DONE]" in bodies[1]
    assert len(upstream.requests) == 1


@pytest.fixture
def two_replicas(
    start_gateway: GatewayFactory, upstream: MockUpstream, redis_server: RedisServer
) -> tuple[GatewayProcess, GatewayProcess]:
    text = table(upstream, redis_server.url)
    return start_gateway(text, name="a.yaml"), start_gateway(text, name="b.yaml")


def test_replicas_share_limits_cache_and_cooldowns_through_redis(
    two_replicas: tuple[GatewayProcess, GatewayProcess], upstream: MockUpstream
) -> None:
    one, two = two_replicas
    # one limit of 2 rpm across both replicas, not 2 each
    fresh = {"Cache-Control": "no-store"}  # identical requests would be cache hits
    statuses = [post(g, "capped", headers=fresh).status_code for g in (one, two, one, two)]
    assert statuses == [200, 200, 429, 429]
    # a cache entry stored by one is served by the other
    assert post(one, "spare:y", temperature=1).headers["x-mini-llm-cache"] == "miss"
    assert post(two, "spare:y", temperature=1).headers["x-mini-llm-cache"] == "hit"
    # a key rested by one replica rests in the other
    upstream.key_status[KEY_A] = (429, {})
    upstream.key_status[KEY_B] = (429, {})
    assert post(one, "keyed:k", headers={"Cache-Control": "no-store"}).status_code == 429

    def resting_in_two() -> bool:
        health = httpx.get(
            two.url + "/health", headers={"x-mini-llm-key": "other-key-0123456789abcd"}
        ).json()
        return all(k["state"] == "resting" for k in health["providers"]["keyed"]["key_states"])

    wait_for(resting_in_two, timeout=2)
    before = len(upstream.requests)
    answer = post(two, "keyed:k", headers={"Cache-Control": "no-store"})
    assert answer.status_code == 429 and answer.json()["error"]["code"] == "all_keys_resting"
    assert len(upstream.requests) == before  # nothing tried: every key rests everywhere


def test_three_replicas_hold_one_limit_under_concurrent_load_and_share_the_cache(
    start_gateway: GatewayFactory, upstream: MockUpstream, redis_server: RedisServer
) -> None:
    text = table(upstream, redis_server.url).replace("limits: {rpm: 2}", "limits: {rpm: 5}")
    replicas = [start_gateway(text, name=f"replica-{n}.yaml") for n in range(3)]
    headers = {"x-mini-llm-key": "other-key-0123456789abcd", "Cache-Control": "no-store"}

    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=10) as client:
            calls = [
                client.post(
                    gateway.url + "/v1/chat/completions",
                    json={"model": "capped", "messages": []},
                    headers=headers,
                )
                for gateway in replicas
                for _ in range(4)
            ]
            return [answer.status_code for answer in await asyncio.gather(*calls)]

    # 12 requests at once, 4 to each replica: 5 rpm in all, not 5 per replica
    assert sorted(asyncio.run(burst())) == [200] * 5 + [429] * 7
    assert len(upstream.requests) == 5
    # an answer one replica stored is a hit in each of the other two
    assert post(replicas[0], "spare:y", temperature=1).headers["x-mini-llm-cache"] == "miss"
    cached = [post(g, "spare:y", temperature=1).headers["x-mini-llm-cache"] for g in replicas[1:]]
    assert cached == ["hit", "hit"]
    assert len(upstream.requests) == 6


def test_a_dead_redis_never_fails_a_request(
    start_gateway: GatewayFactory, upstream: MockUpstream, redis_server: RedisServer
) -> None:
    gateway = start_gateway(table(upstream, redis_server.url))
    redis_server.kill()
    for _ in range(3):
        assert post(gateway, "spare:z", headers={"Cache-Control": "no-store"}).status_code == 200
    assert post(gateway, "capped").status_code == 200  # limits decided from memory


def test_redis_errors_are_counted(
    start_gateway: GatewayFactory, upstream: MockUpstream, redis_server: RedisServer
) -> None:
    gateway = start_gateway(table(upstream, redis_server.url))
    redis_server.kill()
    assert post(gateway, "capped", headers={"Cache-Control": "no-store"}).status_code == 200
    text = httpx.get(
        gateway.url + "/metrics", headers={"x-mini-llm-key": "other-key-0123456789abcd"}
    ).text
    line = next(x for x in text.splitlines() if x.startswith("mini_llm_state_errors_total"))
    assert float(line.split()[-1]) >= 1
