"""End-to-end: the official SDKs of one format served by providers of the other."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
from anthropic.types import MessageParam
from openai.types.chat import ChatCompletionMessageParam

from ..helpers import GatewayProcess, clean_env
from ..mock_upstream import MockUpstream

ANTHROPIC_KEY = "sk-ant-key-aaaaaaaa9999"
OPENAI_KEY = "sk-mock-key-one-1111"

TABLE = """
version: 1
server: {{reload: false}}
defaults:
  timeouts: {{connect_s: 2, read_s: 5}}
  retry: {{attempts: 0, backoff_s: 0.01}}
providers:
  anth:
    base_url: {mock}
    format: anthropic
    auth: {{style: header, header: x-api-key}}
    keys: [{anthropic_key}]
  anth-lax:
    base_url: {mock}
    format: anthropic
    auth: {{style: header, header: x-api-key}}
    keys: [{anthropic_key}]
    drop_unsupported: true
    default_max_tokens: 77
  oai:
    base_url: {mock}
    format: openai
    keys: [{openai_key}]
routes:
  aliases:
    claude: anth:claude-up
    claude-lax: anth-lax:claude-up
    claude-422: anth:status-422
    claude-drop: anth:drop-stream
    gpt-drop: oai:drop-stream
    gpt: oai:gpt-up
    gpt-422: oai:status-422
    smart: [anth:status-503, oai:gpt-up]
  prefixes: {{"claude-": anth}}
"""

HI = [{"role": "user", "content": "hi"}]
CHAT_HI: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
MESSAGES_HI: list[MessageParam] = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def gateway(
    mock_server: MockUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    path = tmp_path_factory.mktemp("translation") / "mini-llm.yaml"
    path.write_text(
        TABLE.format(mock=mock_server.url, anthropic_key=ANTHROPIC_KEY, openai_key=OPENAI_KEY)
    )
    process = GatewayProcess(path)
    process.wait_listening()
    yield process
    assert process.stop() == 0


def oai(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="client-own-key", max_retries=0)


def claude(gateway: GatewayProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key="client-own-key", max_retries=0)


# OpenAI clients, Anthropic providers ------------------------------------------------------------


def test_openai_sdk_to_an_anthropic_provider(
    gateway: GatewayProcess, upstream: MockUpstream
) -> None:
    with oai(gateway) as sdk:
        raw = sdk.chat.completions.with_raw_response.create(
            model="claude",
            messages=[{"role": "system", "content": "be brief"}, *CHAT_HI],
            stop=["END"],
        )
    completion = raw.parse()
    assert completion.choices[0].message.content == "hello from claude-up"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "claude"
    assert completion.usage is not None and completion.usage.total_tokens == 6
    assert raw.headers["x-mini-llm-route"] == "anth:claude-up"
    assert raw.headers["content-type"].startswith("application/json")
    assert "x-mini-llm-dropped" not in raw.headers
    seen = upstream.requests[-1]
    assert seen.path == "/v1/messages"
    assert seen.json == {
        "model": "claude-up",
        "system": "be brief",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 4096,
        "stop_sequences": ["END"],
    }
    assert seen.headers["x-api-key"] == ANTHROPIC_KEY
    assert seen.headers["anthropic-version"] == "2023-06-01"
    assert seen.headers["Accept-Encoding"] == "identity"


def test_openai_stream_helper_through_an_anthropic_provider(
    gateway: GatewayProcess, upstream: MockUpstream
) -> None:
    with (
        oai(gateway) as sdk,
        sdk.chat.completions.stream(model="claude", messages=CHAT_HI) as stream,
    ):
        final = stream.get_final_completion()
    assert final.choices[0].message.content == "one two"
    assert final.choices[0].finish_reason == "stop"
    seen = upstream.requests[-1]
    assert (seen.path, seen.json["stream"]) == ("/v1/messages", True)


def test_an_anthropic_stream_broken_off_ends_the_openai_stream_with_an_error(
    gateway: GatewayProcess, upstream: MockUpstream
) -> None:
    body = {"model": "claude-drop", "messages": HI, "stream": True}
    response = httpx.post(gateway.url + "/v1/chat/completions", json=body, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [line for line in response.text.splitlines() if line.startswith("data: ")]
    assert json.loads(events[-1].removeprefix("data: "))["error"]["code"]
    assert "[DONE]" not in response.text
    with oai(gateway) as sdk, pytest.raises(openai.APIError):
        for _ in sdk.chat.completions.create(model="claude-drop", messages=CHAT_HI, stream=True):
            pass


# Anthropic clients, OpenAI providers ------------------------------------------------------------


def test_anthropic_sdk_to_an_openai_provider(
    gateway: GatewayProcess, upstream: MockUpstream
) -> None:
    with claude(gateway) as sdk:
        raw = sdk.messages.with_raw_response.create(
            model="gpt", max_tokens=50, system="be brief", messages=MESSAGES_HI
        )
    message = raw.parse()
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "hello from gpt-up"  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert message.model == "gpt"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (3, 3)
    assert raw.headers["x-mini-llm-route"] == "oai:gpt-up"
    seen = upstream.requests[-1]
    assert seen.path == "/v1/chat/completions"
    assert seen.json["model"] == "gpt-up"
    assert seen.json["max_completion_tokens"] == 50
    assert seen.json["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]
    assert seen.headers["Authorization"] == f"Bearer {OPENAI_KEY}"
    assert "anthropic-version" not in {name.lower() for name in seen.headers}


def test_anthropic_stream_helper_through_an_openai_provider(
    gateway: GatewayProcess, upstream: MockUpstream
) -> None:
    with (
        claude(gateway) as sdk,
        sdk.messages.stream(model="gpt", max_tokens=50, messages=MESSAGES_HI) as stream,
    ):
        final = stream.get_final_message()
    assert final.content[0].text == "one two three "  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"
    seen = upstream.requests[-1]
    assert (seen.path, seen.json["stream"]) == ("/v1/chat/completions", True)


def test_an_openai_stream_broken_off_ends_the_anthropic_stream_with_an_error(
    gateway: GatewayProcess, upstream: MockUpstream
) -> None:
    body = {"model": "gpt-drop", "max_tokens": 5, "messages": HI, "stream": True}
    response = httpx.post(gateway.url + "/v1/messages", json=body, timeout=10)
    assert response.status_code == 200
    assert response.text.rstrip().split("\n\n")[-1].startswith("event: error\n")
    assert "message_stop" not in response.text
    with claude(gateway) as sdk, pytest.raises(anthropic.APIError):
        for _ in sdk.messages.create(
            model="gpt-drop", max_tokens=5, messages=MESSAGES_HI, stream=True
        ):
            pass


# Errors --------------------------------------------------------------------------------------


def test_upstream_errors_come_back_in_the_clients_shape(
    gateway: GatewayProcess, upstream: MockUpstream
) -> None:
    with oai(gateway) as sdk, pytest.raises(openai.UnprocessableEntityError) as openai_error:
        sdk.chat.completions.create(model="claude-422", messages=CHAT_HI)
    assert openai_error.value.status_code == 422
    assert upstream.requests[-1].path == "/v1/messages"
    with claude(gateway) as sdk, pytest.raises(anthropic.UnprocessableEntityError) as error:
        sdk.messages.create(model="gpt-422", max_tokens=5, messages=MESSAGES_HI)
    assert error.value.status_code == 422
    body = error.value.response.json()
    assert body["type"] == "error"
    assert body["error"]["message"] == "mock error 422"
    assert upstream.requests[-1].path == "/v1/chat/completions"


def test_a_fallback_chain_crosses_formats(gateway: GatewayProcess, upstream: MockUpstream) -> None:
    with oai(gateway) as sdk:
        raw = sdk.chat.completions.with_raw_response.create(model="smart", messages=CHAT_HI)
    assert raw.parse().choices[0].message.content == "hello from gpt-up"
    assert raw.headers["x-mini-llm-route"] == "oai:gpt-up"
    assert [(r.path, r.json["model"]) for r in upstream.requests] == [
        ("/v1/messages", "status-503"),
        ("/v1/chat/completions", "gpt-up"),
    ]
    upstream.reset()
    with claude(gateway) as anthropic_sdk:
        message = anthropic_sdk.messages.create(model="smart", max_tokens=5, messages=MESSAGES_HI)
    assert message.content[0].text == "hello from gpt-up"  # type: ignore[union-attr]
    assert [r.path for r in upstream.requests] == ["/v1/messages", "/v1/chat/completions"]


def test_a_field_that_cannot_be_carried_over_is_a_400_naming_it(
    gateway: GatewayProcess, upstream: MockUpstream
) -> None:
    body = {"model": "claude", "messages": HI, "n": 2}
    response = httpx.post(gateway.url + "/v1/chat/completions", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert "`n`" in error["message"]
    assert error["code"] == "unsupported_parameter"
    assert upstream.requests == []


def test_drop_unsupported_drops_and_names_the_field(
    gateway: GatewayProcess, upstream: MockUpstream
) -> None:
    body = {"model": "claude-lax", "messages": HI, "n": 2}
    response = httpx.post(gateway.url + "/v1/chat/completions", json=body)
    assert response.status_code == 200
    assert response.headers["x-mini-llm-dropped"] == "n"
    seen = upstream.requests[-1].json
    assert "n" not in seen
    assert seen["max_tokens"] == 77


def test_an_endpoint_without_a_counterpart_is_unsupported_for_provider(
    gateway: GatewayProcess, upstream: MockUpstream
) -> None:
    body = {"model": "claude", "input": "hi"}
    response = httpx.post(gateway.url + "/v1/embeddings", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unsupported_for_provider"
    assert upstream.requests == []


def test_same_format_requests_pass_through_untouched(
    gateway: GatewayProcess, upstream: MockUpstream
) -> None:
    raw = (
        b'{"model":  "claude-up", "max_tokens": 5,\n'
        b' "messages": [{"role": "user", "content": "hi"}]}'
    )
    response = httpx.post(
        gateway.url + "/v1/messages", content=raw, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200
    assert response.json()["type"] == "message"
    seen = upstream.requests[-1]
    assert (seen.path, seen.body) == ("/v1/messages", raw)


# mini-llm route -------------------------------------------------------------------------------


def route(table: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "mini_llm", "route", *args, "-c", str(table)]
    return subprocess.run(
        command, capture_output=True, text=True, env=clean_env(), cwd=table.parent, timeout=30
    )


def test_route_says_when_a_request_is_translated(tmp_path: Path) -> None:
    table = tmp_path / "mini-llm.yaml"
    table.write_text(TABLE.format(mock="http://127.0.0.1:9/v1", anthropic_key="k", openai_key="k"))
    text = route(table, "smart").stdout
    assert "anthropic (OpenAI-format requests are translated)" in text
    assert "http://127.0.0.1:9/v1/messages" in text
    assert "openai (same format: passed through)" in text
    facts = json.loads(route(table, "claude", "--path", "/v1/embeddings", "--json").stdout)
    [target] = facts["targets"]
    assert (target["format"], target["translation"]) == ("anthropic", "unsupported")
    facts = json.loads(route(table, "gpt", "--path", "/v1/messages", "--json").stdout)
    [target] = facts["targets"]
    assert (target["format"], target["translation"]) == ("openai", "translated")
    assert target["url"] == "http://127.0.0.1:9/v1/chat/completions"
