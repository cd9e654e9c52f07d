"""The builtin echo provider through the real gateway: no key, both SDKs, streams, pacing."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest

from ..helpers import REPO, GatewayProcess


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewayProcess]:
    """The default table as shipped, with no provider key in the environment."""
    process = GatewayProcess(REPO / "mini-llm.yaml", "--log-requests", "--no-reload")
    process.wait_listening()
    yield process
    process.stop()


def test_demo_answers_the_openai_sdk_without_a_key(gateway: GatewayProcess) -> None:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)
    done = client.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "hello there gateway"}]
    )
    assert "hello there gateway" in (done.choices[0].message.content or "")
    assert done.usage is not None and done.usage.completion_tokens > 0
    with client.chat.completions.stream(
        model="demo", messages=[{"role": "user", "content": "stream me"}]
    ) as stream:
        final = stream.get_final_completion()
    assert "stream me" in (final.choices[0].message.content or "")


def test_demo_answers_the_anthropic_sdk_without_a_key(gateway: GatewayProcess) -> None:
    client = anthropic.Anthropic(base_url=gateway.url, api_key="unused", max_retries=0)
    message = client.messages.create(
        model="demo", max_tokens=50, messages=[{"role": "user", "content": "hi claude"}]
    )
    assert "hi claude" in message.content[0].text  # type: ignore[union-attr]
    with client.messages.stream(
        model="demo", max_tokens=50, messages=[{"role": "user", "content": "and streamed"}]
    ) as stream:
        final = stream.get_final_message()
    assert "and streamed" in final.content[0].text  # type: ignore[union-attr]
    assert final.usage.output_tokens > 0


def test_echo_goes_through_routing_headers_and_the_access_log(gateway: GatewayProcess) -> None:
    response = httpx.post(
        gateway.url + "/v1/chat/completions",
        json={"model": "demo", "messages": [{"role": "user", "content": "x"}]},
        headers={"x-request-id": "echo-path"},
    )
    assert response.status_code == 200
    assert response.headers["x-mini-llm-route"] == "echo:echo-1"
    assert response.json()["model"] == "echo-1"  # the alias was rewritten on the way
    assert gateway.wait_stderr("id=echo-path")
    line = next(x for x in gateway.stderr().splitlines() if "id=echo-path" in x)
    assert "route=echo:echo-1" in line and " 200 " in line
    embeddings = httpx.post(gateway.url + "/v1/embeddings", json={"model": "echo:e", "input": "a"})
    assert embeddings.json()["data"][0]["object"] == "embedding"


def test_echo_slow_streams_one_word_at_a_time(gateway: GatewayProcess) -> None:
    arrivals: list[float] = []
    started = time.monotonic()
    with httpx.stream(
        "POST",
        gateway.url + "/v1/chat/completions",
        json={
            "model": "echo:echo-slow",
            "stream": True,
            "messages": [{"role": "user", "content": "one two three four"}],
        },
        timeout=10,
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data: ") and '"content"' in line:
                arrivals.append(time.monotonic() - started)
    assert len(arrivals) >= 4
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert all(gap >= 0.05 for gap in gaps[-3:]), gaps  # paced, not sent at once
