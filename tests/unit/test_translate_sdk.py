"""The official SDKs read translated answers, streams and errors (in memory, no sockets)."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import anthropic
import openai
import pytest

from mini_llm.translate import (
    content_type,
    stream_translator,
    translate_answer,
    translate_error,
    translate_request,
)

from .translate_samples import (
    ANTHROPIC_EVENTS,
    ANTHROPIC_MESSAGE,
    ANTHROPIC_STREAM,
    OPENAI_CHUNKS,
    OPENAI_COMPLETION,
    OPENAI_STREAM,
    anthropic_sse,
    openai_sse,
)

# What the provider answers to the translated request: status and body.
Upstream = Callable[[dict[str, Any]], tuple[int, bytes]]


def http_library(sdk: ModuleType) -> ModuleType:
    """The HTTP library an SDK is built on: httpx, or its successor httpx2 in later releases."""
    uses_httpx2 = hasattr(importlib.import_module(f"{sdk.__name__}._base_client"), "httpx2")
    return importlib.import_module("httpx2" if uses_httpx2 else "httpx")


def pieces(raw: bytes, size: int = 7) -> Iterator[bytes]:
    return (raw[i : i + size] for i in range(0, len(raw), size))


def translated(client_request: dict[str, Any], upstream: bytes, *, to: Any) -> Iterator[bytes]:
    """What the gateway writes: each upstream piece translated as it arrives."""
    translator = stream_translator(client_request, to=to)
    for piece in pieces(upstream):
        yield translator.feed(piece)
    yield translator.close()


class Gateway:
    """An in-memory stand-in for the gateway: translates the request, answers from `upstream`."""

    def __init__(self, sdk: ModuleType, client_format: Any, upstream: Upstream) -> None:
        self.http = http_library(sdk)
        self.client_format = client_format
        self.upstream = upstream
        self.sent: list[dict[str, Any]] = []

    def client(self) -> Any:
        return self.http.Client(transport=self.http.MockTransport(self))

    def __call__(self, request: Any) -> Any:
        body = json.loads(request.content)
        provider = "openai" if self.client_format == "anthropic" else "anthropic"
        upstream_body, _ = translate_request(body, to=provider)
        self.sent.append(upstream_body)
        status, content = self.upstream(upstream_body)
        if status >= 400:
            error = translate_error(status, content, to=self.client_format)
            headers = {"content-type": content_type(False)}
            return self.http.Response(status, content=error, headers=headers)
        if body.get("stream"):
            stream = translated(body, content, to=self.client_format)
            headers = {"content-type": content_type(True)}
            return self.http.Response(200, content=stream, headers=headers)
        doc = translate_answer(
            json.loads(content), to=self.client_format, client_model=body["model"]
        )
        return self.http.Response(200, json=doc)


def openai_client(upstream: Upstream) -> tuple[openai.OpenAI, Gateway]:
    gateway = Gateway(openai, "openai", upstream)
    client = openai.OpenAI(
        api_key="k", base_url="http://gateway.test/v1", http_client=gateway.client(), max_retries=0
    )
    return client, gateway


def anthropic_client(upstream: Upstream) -> tuple[anthropic.Anthropic, Gateway]:
    gateway = Gateway(anthropic, "anthropic", upstream)
    client = anthropic.Anthropic(
        api_key="k", base_url="http://gateway.test", http_client=gateway.client(), max_retries=0
    )
    return client, gateway


def sse(raw: bytes) -> Upstream:
    return lambda _: (200, raw)


def answer(doc: dict[str, Any]) -> Upstream:
    return lambda _: (200, json.dumps(doc).encode())


def failing(status: int, body: bytes) -> Upstream:
    return lambda _: (status, body)


TOOLS: Any = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
MESSAGES: Any = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather?"},
]


# The OpenAI SDK in front of an Anthropic provider ------------------------------------------------


def test_openai_stream_helper_rebuilds_the_completion() -> None:
    client, gateway = openai_client(sse(ANTHROPIC_STREAM))
    with client.chat.completions.stream(
        model="claude-sonnet",
        messages=MESSAGES,
        tools=TOOLS,
        stream_options={"include_usage": True},
    ) as stream:
        texts = [e.delta for e in stream if e.type == "content.delta" and e.delta]
        final = stream.get_final_completion()
    assert texts == ["Hello", ", wörld"]
    choice = final.choices[0]
    assert choice.message.content == "Hello, wörld"
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert (call.id, call.function.name) == ("toolu_01", "get_weather")
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert final.model == "claude-sonnet"
    assert final.usage is not None and final.usage.prompt_tokens == 30
    assert gateway.sent[0]["system"] == "Be brief."
    assert gateway.sent[0]["tools"][0]["input_schema"]["type"] == "object"


def test_openai_stream_iteration() -> None:
    client, _ = openai_client(sse(ANTHROPIC_STREAM))
    chunks = list(client.chat.completions.create(model="c", messages=MESSAGES, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello, wörld"
    assert all(c.usage is None for c in chunks)


def test_openai_create_reads_a_translated_message() -> None:
    client, gateway = openai_client(answer(ANTHROPIC_MESSAGE))
    completion = client.chat.completions.create(
        model="claude-sonnet", messages=MESSAGES, tools=TOOLS
    )
    assert completion.choices[0].message.content == "Hello, wörld"
    assert completion.model == "claude-sonnet"
    assert gateway.sent[0]["max_tokens"] == 4096


def test_openai_sdk_raises_on_an_error_event_mid_stream() -> None:
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    client, _ = openai_client(sse(anthropic_sse(*ANTHROPIC_EVENTS[:8], error)))
    stream = client.chat.completions.create(model="c", messages=MESSAGES, stream=True)
    with pytest.raises(openai.APIError, match="Overloaded"):
        list(stream)


def test_openai_sdk_raises_on_a_stream_cut_short() -> None:
    client, _ = openai_client(sse(ANTHROPIC_STREAM[:300]))
    with pytest.raises(openai.APIError, match="ended"):
        list(client.chat.completions.create(model="c", messages=MESSAGES, stream=True))


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (429, openai.RateLimitError),
        (400, openai.BadRequestError),
        (529, openai.InternalServerError),
    ],
)
def test_openai_sdk_reads_a_translated_error(status: int, error: type[Exception]) -> None:
    body = b'{"type":"error","error":{"type":"some_error","message":"Upstream said no"}}'
    client, _ = openai_client(failing(status, body))
    with pytest.raises(error, match="Upstream said no") as caught:
        client.chat.completions.create(model="c", messages=MESSAGES)
    assert caught.value.status_code == status  # type: ignore[attr-defined]


# The Anthropic SDK in front of an OpenAI provider ------------------------------------------------


def test_anthropic_stream_helper_rebuilds_the_message() -> None:
    client, gateway = anthropic_client(sse(OPENAI_STREAM))
    with client.messages.stream(
        model="gpt-4o",
        max_tokens=100,
        system="Be brief.",
        messages=[{"role": "user", "content": "Weather?"}],
        tools=[{"name": "f", "input_schema": {"type": "object"}}],
    ) as stream:
        texts = list(stream.text_stream)
        message = stream.get_final_message()
    assert texts == ["Hello", ", wörld"]
    assert message.model == "gpt-4o"
    assert message.stop_reason == "tool_use"
    assert [b.type for b in message.content] == ["text", "tool_use", "tool_use"]
    first, second = message.content[1], message.content[2]
    assert first.type == "tool_use" and second.type == "tool_use"
    assert (first.id, first.name, first.input) == ("call_a", "f", {"x": 1})
    assert (second.id, second.name, second.input) == ("call_b", "g", {})
    assert (message.usage.input_tokens, message.usage.output_tokens) == (20, 12)
    assert message.usage.cache_read_input_tokens == 10
    assert gateway.sent[0]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert gateway.sent[0]["stream_options"] == {"include_usage": True}


def test_anthropic_create_reads_a_translated_completion() -> None:
    client, gateway = anthropic_client(answer(OPENAI_COMPLETION))
    message = client.messages.create(
        model="gpt-4o", max_tokens=5, messages=[{"role": "user", "content": "Hi"}]
    )
    assert message.content[0].type == "text" and message.content[0].text == "Hello, wörld"
    assert message.stop_reason == "tool_use"
    assert gateway.sent[0]["max_completion_tokens"] == 5


def test_anthropic_sdk_raises_on_an_error_mid_stream() -> None:
    error = {"error": {"message": "Rate limited", "type": "rate_limit_error"}}
    client, _ = anthropic_client(sse(openai_sse(*OPENAI_CHUNKS[:3], error)))
    with pytest.raises(anthropic.APIStatusError, match="Rate limited"):  # noqa: SIM117
        with client.messages.stream(
            model="gpt-4o", max_tokens=5, messages=[{"role": "user", "content": "Hi"}]
        ) as stream:
            stream.get_final_message()


def test_anthropic_sdk_raises_on_a_stream_cut_short() -> None:
    client, _ = anthropic_client(sse(openai_sse(*OPENAI_CHUNKS[:-1])))
    with pytest.raises(anthropic.APIStatusError, match="ended"):  # noqa: SIM117
        with client.messages.stream(
            model="gpt-4o", max_tokens=5, messages=[{"role": "user", "content": "Hi"}]
        ) as stream:
            stream.get_final_message()


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (429, anthropic.RateLimitError),
        (401, anthropic.AuthenticationError),
        (404, anthropic.NotFoundError),
        (500, anthropic.InternalServerError),
    ],
)
def test_anthropic_sdk_reads_a_translated_error(status: int, error: type[Exception]) -> None:
    body = b'{"error":{"message":"Upstream said no","type":"x","code":"y"}}'
    client, _ = anthropic_client(failing(status, body))
    with pytest.raises(error, match="Upstream said no") as caught:
        client.messages.create(
            model="gpt-4o", max_tokens=5, messages=[{"role": "user", "content": "Hi"}]
        )
    assert caught.value.status_code == status  # type: ignore[attr-defined]


def test_anthropic_sdk_reads_an_error_that_is_not_json() -> None:
    client, _ = anthropic_client(failing(502, b"<html>Bad Gateway</html>"))
    with pytest.raises(anthropic.InternalServerError, match="Bad Gateway"):
        client.messages.create(
            model="gpt-4o", max_tokens=5, messages=[{"role": "user", "content": "Hi"}]
        )
