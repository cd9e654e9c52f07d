"""Balancing strategies, circuit breakers and streams retried before their first content."""

from __future__ import annotations

import contextlib
import threading
from collections import Counter

import anthropic
import httpx
import openai
import pytest

from ..conftest import GatewayFactory
from ..helpers import GatewayProcess, wait_for
from ..mock_upstream import MockUpstream

KEY_ONE = "sk-one-0000000000000001"
KEY_TWO = "sk-two-0000000000000002"


def table(mock: MockUpstream) -> str:
    return f"""version: 1
server: {{reload: false}}
defaults:
  retry: {{attempts: 0, backoff_s: 0.01}}
  health: {{failures: 2, open_s: 0.5}}
providers:
  one:
    base_url: {mock.url}
    keys: {KEY_ONE}
  two:
    base_url: {mock.url}
    keys: {KEY_TWO}
  flaky:
    base_url: {mock.url}
    auth: none
  retried:
    base_url: {mock.url}
    auth: none
    retry: {{attempts: 1, backoff_s: 0.01}}
routes:
  aliases:
    weighted:
      strategy: weighted
      targets:
        - {{target: one:m-one, weight: 3}}
        - two:m-two
    busy: {{strategy: least_busy, targets: [one:slow-stream, two:slow-stream]}}
    quick: {{strategy: latency, targets: [one:slow-60, two:fast]}}
    guarded: [flaky:status-503, two:backup]
    limited: [flaky:status-429, two:backup]
    starts-badly: [flaky:error-first, two:good]
    drops-early: [flaky:drop-first, two:good]
    only-bad: [retried:error-first]
"""


@pytest.fixture
def gateway(start_gateway: GatewayFactory, upstream: MockUpstream) -> GatewayProcess:
    return start_gateway(table(upstream))


def chat(gateway: GatewayProcess, model: str, **extra: object) -> httpx.Response:
    return httpx.post(
        gateway.url + "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "x"}], **extra},
        timeout=10,
    )


def circuit(gateway: GatewayProcess, provider: str) -> dict[str, object]:
    found = httpx.get(gateway.url + "/health").json()["providers"][provider]
    return {"circuit": found["circuit"], "until": found["until"]}


def test_weighted_spreads_by_weight(gateway: GatewayProcess, upstream: MockUpstream) -> None:
    for _ in range(200):
        assert chat(gateway, "weighted").status_code == 200
    counts = Counter(seen.json["model"] for seen in upstream.requests)
    assert 0.62 < counts["m-one"] / 200 < 0.88, counts  # 3 : 1, with room for chance


def test_least_busy_sends_to_the_target_with_fewest_in_flight(
    gateway: GatewayProcess, upstream: MockUpstream
) -> None:
    def stream() -> None:
        with contextlib.suppress(httpx.HTTPError):
            chat(gateway, "busy", stream=True)

    threads = [threading.Thread(target=stream, daemon=True) for _ in range(2)]
    threads[0].start()
    wait_for(lambda: len(upstream.requests) == 1)
    threads[1].start()
    wait_for(lambda: len(upstream.requests) == 2)
    first, second = (seen.key for seen in upstream.requests)
    assert {first, second} == {KEY_ONE, KEY_TWO}  # the second went to the idle target
    upstream.release.set()
    for thread in threads:
        thread.join(10)


def test_latency_prefers_the_faster_target_and_keeps_measuring_the_other(
    gateway: GatewayProcess, upstream: MockUpstream
) -> None:
    for _ in range(200):
        assert chat(gateway, "quick").status_code == 200
    counts = Counter(seen.json["model"] for seen in upstream.requests[20:])
    assert counts["fast"] > 0.8 * sum(counts.values()), counts
    assert Counter(seen.json["model"] for seen in upstream.requests)["slow-60"] >= 2


def test_the_circuit_opens_after_failures_in_a_row_then_probes(
    gateway: GatewayProcess, upstream: MockUpstream
) -> None:
    def tried() -> int:
        return sum(seen.json["model"] == "status-503" for seen in upstream.requests)

    for _ in range(2):
        response = chat(gateway, "guarded")
        assert response.headers["x-mini-llm-route"] == "two:backup"  # the chain falls back
    assert tried() == 2
    state = circuit(gateway, "flaky")
    assert state["circuit"] == "open" and state["until"]
    assert 'mini_llm_circuit_open{provider="flaky"} 1.0' in httpx.get(gateway.url + "/metrics").text
    for _ in range(3):
        assert chat(gateway, "guarded").headers["x-mini-llm-route"] == "two:backup"
    assert tried() == 2  # skipped while open
    wait_for(lambda: circuit(gateway, "flaky")["circuit"] == "half_open", timeout=3)
    assert chat(gateway, "guarded").headers["x-mini-llm-route"] == "two:backup"
    assert tried() == 3  # one probe, which failed: open again
    assert circuit(gateway, "flaky")["circuit"] == "open"


def test_429_does_not_open_the_circuit(gateway: GatewayProcess, upstream: MockUpstream) -> None:
    for _ in range(4):
        assert chat(gateway, "flaky:status-429").status_code == 429
    assert circuit(gateway, "flaky") == {"circuit": "closed", "until": None}


@pytest.mark.parametrize("alias", ["starts-badly", "drops-early"])
def test_a_stream_that_fails_before_content_is_answered_by_the_next_target(
    gateway: GatewayProcess, upstream: MockUpstream, alias: str
) -> None:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0)
    with client.chat.completions.stream(
        model=alias, messages=[{"role": "user", "content": "x"}]
    ) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == "one two three "
    assert final.model == "good"
    claude = anthropic.Anthropic(base_url=gateway.url, api_key="x", max_retries=0)
    with claude.messages.stream(
        model=alias, max_tokens=5, messages=[{"role": "user", "content": "x"}]
    ) as stream:
        message = stream.get_final_message()
    assert message.model == "good"
    models = [seen.json["model"] for seen in upstream.requests]
    assert models.count("good") == 2 and len(models) == 4


def test_when_every_try_fails_before_content_the_client_sees_the_error(
    gateway: GatewayProcess, upstream: MockUpstream
) -> None:
    with httpx.stream(
        "POST",
        gateway.url + "/v1/chat/completions",
        json={"model": "only-bad", "stream": True, "messages": []},
    ) as response:
        body = response.read()
    assert len(upstream.requests) == 2  # retried once, then the last answer as it came
    assert b'"error"' in body and b"[DONE]" not in body
