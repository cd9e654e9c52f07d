"""Retries, key failover, cooldowns, fallback chains and broken streams."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from ..conftest import GatewayFactory
from ..helpers import GatewayProcess, clean_env, free_port, wait_for
from ..mock_upstream import MockUpstream

KEY_A = "sk-key-a-aaaaaaaa0001"
KEY_B = "sk-key-b-bbbbbbbb0002"
KEY_C = "sk-key-c-cccccccc0003"
SOLO = "sk-solo-key-00000009"


def table(mock: MockUpstream, jammed: int = 9) -> str:
    return f"""version: 1
server: {{reload: false}}
defaults:
  timeouts: {{connect_s: 1, read_s: 1}}
  retry: {{attempts: 2, backoff_s: 0.05, max_backoff_s: 0.2}}
  cooldown: {{rate_limited_s: 30, auth_failed_s: 300}}
providers:
  main:
    base_url: {mock.url}
    keys: [{KEY_A}, {KEY_B}, {KEY_C}]
  solo:
    base_url: {mock.url}
    keys: {SOLO}
    cooldown: {{rate_limited_s: 12}}
  once:
    base_url: {mock.url}
    keys: [{KEY_A}, {KEY_B}]
    retry: {{attempts: 0}}
  jammed:
    base_url: http://127.0.0.1:{jammed}/v1
    keys: [sk-jammed-key-0000000]
    timeouts: {{connect_s: 0.2}}
  dead:
    base_url: http://127.0.0.1:{free_port()}/v1
    keys: [sk-dead-key-00000000]
  backup:
    base_url: {mock.url}
    auth: none
  off:
    base_url: https://example.invalid/v1
    keys: ${{UNSET_TEST_KEY:-}}
routes:
  aliases:
    chain: [dead:m1, off:m2, backup:m3]
    chain-5xx: ["main:status-503", "backup:ok-model"]
    chain-400: ["main:status-400", "backup:ok-model"]
    chain-5xx-off: ["main:status-503", "off:m"]
    chain-solo-off: ["solo:m", "off:m"]
"""


@pytest.fixture(scope="module")
def jammed_port() -> Iterator[int]:
    """A port whose accept queue is full: connecting there times out, like a dead host."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = int(server.getsockname()[1])
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    yield port
    for sock in [*fillers, server]:
        sock.close()


@pytest.fixture
def gateway(
    start_gateway: GatewayFactory, upstream: MockUpstream, jammed_port: int
) -> GatewayProcess:
    return start_gateway(table(upstream, jammed_port))


def post(
    gateway: GatewayProcess, model: str, path: str = "/v1/chat/completions", **extra: object
) -> httpx.Response:
    return httpx.post(gateway.url + path, json={"model": model, **extra}, timeout=10)


def key_states(gateway: GatewayProcess, provider: str) -> list[dict[str, object]]:
    health = httpx.get(gateway.url + "/health").json()
    return list(health["providers"][provider]["key_states"])


# Keys: 429 and 401 ---------------------------------------------------------------------------


def test_429_rests_the_key_and_retries_at_once_with_the_next(
    gateway: GatewayProcess, upstream: MockUpstream
) -> None:
    upstream.key_status[KEY_A] = (429, {"Retry-After": "7"})
    response = post(gateway, "main:x")
    assert response.status_code == 200
    assert [s.key for s in upstream.requests] == [KEY_A, KEY_B]
    assert upstream.requests[1].at - upstream.requests[0].at < 0.04  # no backoff after a 429
    states = key_states(gateway, "main")
    assert states[0]["id"] == "sk-…0001" and states[0]["state"] == "resting"
    assert states[0]["failures"] == 1
    until = datetime.fromisoformat(str(states[0]["until"]))
    assert 4 <= (until - datetime.now(timezone.utc)).total_seconds() <= 8
    assert [s["state"] for s in states[1:]] == ["ok", "ok"]
    upstream.requests.clear()
    for _ in range(4):
        assert post(gateway, "main:x").status_code == 200
    assert KEY_A not in [s.key for s in upstream.requests]  # it rests; B and C rotate
    assert {s.key for s in upstream.requests} == {KEY_B, KEY_C}
    assert KEY_A not in json.dumps(httpx.get(gateway.url + "/health").json())


@pytest.mark.parametrize("status", [401, 402, 403])
def test_auth_failures_rest_the_key_and_log_its_masked_id(
    gateway: GatewayProcess, upstream: MockUpstream, status: int
) -> None:
    upstream.key_status[KEY_A] = (status, {})
    assert post(gateway, "main:x").status_code == 200
    assert [s.key for s in upstream.requests] == [KEY_A, KEY_B]
    states = key_states(gateway, "main")
    until = datetime.fromisoformat(str(states[0]["until"]))
    assert 290 <= (until - datetime.now(timezone.utc)).total_seconds() <= 300
    assert gateway.wait_stderr(f"rejected key sk-…0001 with {status}")
    assert KEY_A not in gateway.stderr()


def test_every_key_resting_answers_429_with_retry_after(
    gateway: GatewayProcess, upstream: MockUpstream
) -> None:
    upstream.key_status[SOLO] = (429, {})  # no Retry-After: the provider's rate_limited_s
    first = post(gateway, "solo:x")
    assert first.status_code == 429  # the upstream's own answer, as it sent it
    assert first.json()["error"]["code"] == "mock_429"
    assert len(upstream.requests) == 1
    second = post(gateway, "solo:x")
    assert second.status_code == 429
    assert second.json()["error"]["code"] == "all_keys_resting"
    assert 11 <= int(second.headers["Retry-After"]) <= 12
    anthropic_shaped = post(gateway, "solo:x", path="/v1/messages")
    assert anthropic_shaped.json()["error"]["type"] == "rate_limit_error"
    assert len(upstream.requests) == 1  # no key, no upstream try


# 5xx, connection failures, backoff -------------------------------------------------------------


def test_5xx_retries_with_backoff_on_the_next_key(
    gateway: GatewayProcess, upstream: MockUpstream
) -> None:
    response = post(gateway, "main:flaky-2")
    assert response.status_code == 200
    seen = upstream.requests
    assert len(seen) == 3
    assert len({s.key for s in seen}) == 3  # a fresh key each try
    first_gap, second_gap = seen[1].at - seen[0].at, seen[2].at - seen[1].at
    assert 0.04 <= first_gap <= 0.2  # 0.05 s ± 20 %, plus scheduling
    assert 0.08 <= second_gap <= 0.3  # doubled
    assert [s["state"] for s in key_states(gateway, "main")] == ["ok", "ok", "ok"]


def test_tries_run_out_and_the_last_answer_is_returned(
    gateway: GatewayProcess, upstream: MockUpstream
) -> None:
    response = post(gateway, "main:flaky-9")
    assert response.status_code == 503
    assert response.json()["error"]["message"] == "mock: temporarily overloaded"
    assert len(upstream.requests) == 3  # 1 + retry.attempts


@pytest.mark.parametrize("status", [400, 404, 409, 413, 422])
def test_other_statuses_are_never_retried(
    gateway: GatewayProcess, upstream: MockUpstream, status: int
) -> None:
    assert post(gateway, f"main:status-{status}").status_code == status
    assert len(upstream.requests) == 1


def test_per_provider_retry_override(gateway: GatewayProcess, upstream: MockUpstream) -> None:
    assert post(gateway, "once:flaky-1").status_code == 503
    assert len(upstream.requests) == 1


def test_refused_connections_are_retried_then_502(gateway: GatewayProcess) -> None:
    started = time.monotonic()
    response = post(gateway, "dead:x")
    took = time.monotonic() - started
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_unreachable"
    assert took >= 0.04 + 0.08  # two backoffs happened
    # stderr is read by a thread: the last line may trail the response a little
    wait_for(lambda: gateway.stderr().count("upstream dead failed") >= 3)
    assert gateway.stderr().count("upstream dead failed") == 3


def test_connect_timeouts_are_retried_then_504(gateway: GatewayProcess) -> None:
    started = time.monotonic()
    response = post(gateway, "jammed:x")
    took = time.monotonic() - started
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"
    assert 3 * 0.2 + 0.04 + 0.08 <= took < 3  # three connect timeouts and two pauses
    # stderr is read by a thread: the last line may trail the response a little
    wait_for(lambda: gateway.stderr().count("upstream jammed failed") >= 3)
    assert gateway.stderr().count("upstream jammed failed") == 3


def test_read_timeout_before_the_answer_is_504_and_not_retried(
    gateway: GatewayProcess, upstream: MockUpstream
) -> None:
    response = post(gateway, "main:hang")
    assert response.status_code == 504
    assert len(upstream.requests) == 1


# Fallback chains -------------------------------------------------------------------------------


def test_chain_skips_unreachable_and_disabled_targets(
    gateway: GatewayProcess, upstream: MockUpstream
) -> None:
    response = post(gateway, "chain")
    assert response.status_code == 200
    assert response.headers["x-mini-llm-route"] == "backup:m3"
    assert [s.json["model"] for s in upstream.requests] == ["m3"]


def test_chain_moves_on_after_5xx_tries_run_out(
    gateway: GatewayProcess, upstream: MockUpstream
) -> None:
    response = post(gateway, "chain-5xx")
    assert response.status_code == 200
    assert response.headers["x-mini-llm-route"] == "backup:ok-model"
    assert [s.json["model"] for s in upstream.requests] == ["status-503"] * 3 + ["ok-model"]


def test_chain_stops_at_a_non_retryable_answer(
    gateway: GatewayProcess, upstream: MockUpstream
) -> None:
    response = post(gateway, "chain-400")
    assert response.status_code == 400
    assert response.headers["x-mini-llm-route"] == "main:status-400"
    assert len(upstream.requests) == 1


def test_route_shows_the_chain(upstream: MockUpstream, tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(table(upstream))
    result = subprocess.run(
        [sys.executable, "-m", "mini_llm", "route", "chain", "-c", str(path), "--json"],
        capture_output=True,
        text=True,
        env=clean_env(),
        check=True,
    )
    facts = json.loads(result.stdout)
    assert facts["rule"] == "alias"
    assert [(t["provider"], t["model"]) for t in facts["targets"]] == [
        ("dead", "m1"),
        ("off", "m2"),
        ("backup", "m3"),
    ]
    assert facts["targets"][1]["enabled"] is False


# Broken streams --------------------------------------------------------------------------------


def test_openai_stream_cut_mid_way_makes_the_sdk_raise(
    gateway: GatewayProcess, upstream: MockUpstream
) -> None:
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0) as sdk:
        stream = sdk.chat.completions.create(model="main:drop-stream", messages=[], stream=True)
        received: list[str | None] = []

        def consume() -> None:
            for chunk in stream:
                received.append(chunk.choices[0].delta.content)

        with pytest.raises(openai.APIError):
            consume()
    assert received == ["one ", "two "]
    assert len(upstream.requests) == 1  # nothing is retried once bytes went out


def test_anthropic_stream_cut_mid_way_makes_the_sdk_raise(
    gateway: GatewayProcess, upstream: MockUpstream
) -> None:
    def consume(sdk: anthropic.Anthropic) -> str:
        with sdk.messages.stream(
            model="main:drop-stream", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        ) as stream:
            return "".join(stream.text_stream)

    sdk = anthropic.Anthropic(base_url=gateway.url, api_key="x", max_retries=0)
    with sdk, pytest.raises(anthropic.APIError):
        consume(sdk)


@pytest.mark.parametrize(
    ("path", "model", "expected_tail"),
    [
        ("/v1/chat/completions", "main:drop-stream", b'"code": "upstream_stream_error"}}\n\n'),
        ("/v1/chat/completions", "main:hang-stream", b'"code": "upstream_stream_error"}}\n\n'),
        ("/v1/messages", "main:drop-stream", b'"type": "api_error", "message": '),
    ],
)
def test_a_broken_stream_ends_with_an_error_event_never_a_clean_end(
    gateway: GatewayProcess, path: str, model: str, expected_tail: bytes
) -> None:
    with httpx.stream(
        "POST", gateway.url + path, json={"model": model, "stream": True}, timeout=10
    ) as response:
        body = response.read()
    assert response.status_code == 200
    assert expected_tail in body
    assert b"[DONE]" not in body and b"message_stop" not in body
    if path == "/v1/messages":
        assert b"event: error\ndata: " in body
    else:
        last = body.strip().split(b"\n\n")[-1]
        assert json.loads(last.removeprefix(b"data: "))["error"]["type"] == "server_error"


def test_without_a_key_of_ours_429_and_401_are_answers(
    gateway: GatewayProcess, upstream: MockUpstream
) -> None:
    # auth: none has no key to rest or rotate: retrying would only ask again
    for status in (429, 401):
        upstream.requests.clear()
        assert post(gateway, f"backup:status-{status}").status_code == status
        assert len(upstream.requests) == 1


# The last usable target decides -------------------------------------------------------------


def test_a_disabled_last_target_does_not_hide_the_upstreams_5xx(
    gateway: GatewayProcess, upstream: MockUpstream
) -> None:
    response = post(gateway, "chain-5xx-off")
    assert response.status_code == 503
    assert response.json()["error"]["message"] == "mock error 503"  # the upstream's own body
    assert response.headers["x-mini-llm-route"] == "main:status-503"
    assert len(upstream.requests) == 3  # its tries ran out; `off` was never a candidate


def test_a_disabled_last_target_does_not_hide_the_upstreams_429(
    gateway: GatewayProcess, upstream: MockUpstream
) -> None:
    upstream.key_status[SOLO] = (429, {"Retry-After": "12"})
    response = post(gateway, "chain-solo-off")
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "12"
    assert response.json()["error"]["message"] == "key rejected with 429"
    assert response.headers["x-mini-llm-route"] == "solo:m"


def test_access_line_names_the_key_of_the_answer_given(
    start_gateway: GatewayFactory, upstream: MockUpstream
) -> None:
    gateway = start_gateway(table(upstream), "--log-requests")
    upstream.key_status[SOLO] = (429, {"Retry-After": "12"})
    assert post(gateway, "solo:m").status_code == 429  # the held-back upstream answer
    assert gateway.wait_stderr("POST /v1/chat/completions 429")
    line = next(x for x in gateway.stderr().splitlines() if " 429 " in x)
    assert "key=sk-…0009" in line and "route=solo:m" in line and "tries=1" in line
