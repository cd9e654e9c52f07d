"""The builtin echo provider: answers checked against the real OpenAI and Anthropic SDK types."""

from __future__ import annotations

import asyncio
import base64
import importlib
import json
import struct
from typing import Any

import anthropic
import httpx
import openai
import pytest
from aiohttp import ClientConnectionError
from anthropic.types import Message, RawMessageStreamEvent
from openai.types import Completion, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import TypeAdapter

from mini_llm.echo import SLOW_WORD_PAUSE_S, EchoResponse, echo_exchange
from mini_llm.echo_answers import NOTHING_TO_ECHO, embedding

STREAM_EVENT: TypeAdapter[RawMessageStreamEvent] = TypeAdapter(RawMessageStreamEvent)
CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "first question"},
    {"role": "assistant", "content": "first answer"},
    {"role": "user", "content": "Hello there, gateway!"},
]


async def post(tail: str, doc: Any, headers: dict[str, str] | None = None) -> EchoResponse:
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return await echo_exchange("POST", tail, headers or {}, body)


async def whole(tail: str, doc: Any) -> tuple[EchoResponse, Any]:
    response = await post(tail, doc)
    body = await response.read()
    assert response.content_type == "application/json"
    assert response.headers["Content-Type"] == "application/json"
    assert response.content_length == len(body) == int(response.headers["Content-Length"])
    return response, json.loads(body)


async def sse(response: EchoResponse) -> list[tuple[str | None, str]]:
    """(event name, data) of each server-sent event, read chunk by chunk as a proxy would."""
    assert response.status == 200
    assert response.content_type == "text/event-stream"
    assert response.content_length is None and "Content-Length" not in response.headers
    raw = b""
    while chunk := await response.content.readany():
        raw += chunk
    assert raw.endswith(b"\n\n")
    events = []
    for block in raw.decode().split("\n\n")[:-1]:
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        assert set(fields) <= {"event", "data"}
        events.append((fields.get("event"), fields["data"]))
    return events


# OpenAI chat completions -----------------------------------------------------------------------


async def test_chat_completion_echoes_the_last_user_message() -> None:
    response, doc = await whole("/chat/completions", {"model": "echo-1", "messages": CHAT})
    assert (response.status, response.reason) == (200, "OK")
    completion = ChatCompletion.model_validate(doc)
    assert completion.model == "echo-1"
    assert completion.choices[0].message.content == "Hello there, gateway!"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    # Words of every message in; words of the answer out.
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (9, 3)
    assert completion.usage.total_tokens == 12


async def test_chat_text_parts_are_echoed_and_images_skipped() -> None:
    content = [
        {"type": "text", "text": "look at"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "text", "text": "this"},
    ]
    _, doc = await whole(
        "/chat/completions", {"model": "m", "messages": [{"role": "user", "content": content}]}
    )
    assert ChatCompletion.model_validate(doc).choices[0].message.content == "look at\nthis"


async def test_chat_without_user_text_says_so() -> None:
    messages = [{"role": "system", "content": "only a system prompt"}]
    _, doc = await whole("/chat/completions", {"model": "m", "messages": messages})
    assert doc["choices"][0]["message"]["content"] == NOTHING_TO_ECHO


async def test_max_tokens_cuts_the_answer_short() -> None:
    ask = {"model": "m", "messages": CHAT, "max_tokens": 2}
    _, doc = await whole("/chat/completions", ask)
    completion = ChatCompletion.model_validate(doc)
    assert completion.choices[0].message.content == "Hello there, "
    assert completion.choices[0].finish_reason == "length"
    # max_completion_tokens wins over max_tokens, as at OpenAI.
    _, doc = await whole("/chat/completions", ask | {"max_completion_tokens": 10})
    assert doc["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("include_usage", [False, True])
async def test_chat_stream(include_usage: bool) -> None:
    ask: dict[str, Any] = {"model": "echo-1", "messages": CHAT, "stream": True}
    if include_usage:
        ask["stream_options"] = {"include_usage": True}
    events = await sse(await post("/chat/completions", ask))
    assert events[-1] == (None, "[DONE]")
    chunks = [ChatCompletionChunk.model_validate_json(data) for _, data in events[:-1]]
    assert {c.model for c in chunks} == {"echo-1"}
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    if include_usage:
        *chunks, usage_chunk = chunks
        assert usage_chunk.choices == []
        assert usage_chunk.usage is not None
        assert (usage_chunk.usage.prompt_tokens, usage_chunk.usage.completion_tokens) == (9, 3)
        assert all("usage" in json.loads(data) for _, data in events[:-2])
    else:
        assert all("usage" not in json.loads(data) for _, data in events[:-1])
    *content, finish = chunks
    assert "".join(c.choices[0].delta.content or "" for c in content) == "Hello there, gateway!"
    assert [c.choices[0].finish_reason for c in chunks] == [None] * len(content) + ["stop"]
    assert finish.choices[0].delta.content is None


# OpenAI completions and embeddings -------------------------------------------------------------


async def test_text_completion() -> None:
    ask = {"model": "echo-1", "prompt": ["ignored", "say this back"]}
    _, doc = await whole("/completions", ask)
    completion = Completion.model_validate(doc)
    assert completion.choices[0].text == "say this back"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (4, 3)


async def test_text_completion_stream() -> None:
    ask = {
        "model": "echo-1",
        "prompt": "say this back",
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    events = await sse(await post("/completions", ask))
    assert events[-1] == (None, "[DONE]")
    docs = [json.loads(data) for _, data in events[:-1]]
    assert {d["object"] for d in docs} == {"text_completion"}
    *texts, finish, usage = docs
    assert "".join(d["choices"][0]["text"] for d in texts) == "say this back"
    assert Completion.model_validate(finish).choices[0].finish_reason == "stop"
    assert Completion.model_validate(usage).usage is not None and usage["choices"] == []


async def test_embeddings_are_deterministic_unit_vectors() -> None:
    ask = {"model": "echo-embed", "input": ["one text", "another text", "one text"]}
    _, doc = await whole("/embeddings", ask)
    answer = CreateEmbeddingResponse.model_validate(doc)
    assert answer.model == "echo-embed"
    first, second, third = (d.embedding for d in answer.data)
    assert [d.index for d in answer.data] == [0, 1, 2]
    assert first == third != second
    assert len(first) == 16 and abs(sum(x * x for x in first) - 1) < 1e-9
    assert (answer.usage.prompt_tokens, answer.usage.total_tokens) == (6, 6)


async def test_embeddings_base64_and_dimensions_and_tokens() -> None:
    ask = {"model": "e", "input": [1, 2, 3], "encoding_format": "base64", "dimensions": 4}
    _, doc = await whole("/embeddings", ask)
    packed = base64.b64decode(doc["data"][0]["embedding"])
    decoded = struct.unpack("<4f", packed)
    assert decoded == pytest.approx(embedding("1 2 3", 4), abs=1e-6)
    assert doc["usage"]["prompt_tokens"] == 3


# Anthropic messages ----------------------------------------------------------------------------


def anthropic_ask(**extra: Any) -> dict[str, Any]:
    blocks = [{"type": "text", "text": "Hi"}, {"type": "text", "text": "Claude, echo me"}]
    return {
        "model": "echo-1",
        "max_tokens": 100,
        "system": [{"type": "text", "text": "You echo."}],
        "messages": [
            {"role": "user", "content": "earlier"},
            {"role": "assistant", "content": "reply"},
            {"role": "user", "content": blocks},
        ],
        **extra,
    }


async def test_anthropic_message() -> None:
    _, doc = await whole("/messages", anthropic_ask())
    message = Message.model_validate(doc)
    assert message.model == "echo-1"
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == "Hi\nClaude, echo me"  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (8, 4)


async def test_anthropic_message_cut_by_max_tokens() -> None:
    _, doc = await whole("/messages", anthropic_ask(max_tokens=1))
    message = Message.model_validate(doc)
    assert message.content[0].text == "Hi\n"  # type: ignore[union-attr]
    assert (message.stop_reason, message.usage.output_tokens) == ("max_tokens", 1)


async def test_anthropic_stream() -> None:
    events = await sse(await post("/messages", anthropic_ask(stream=True)))
    parsed = [STREAM_EVENT.validate_json(data) for _, data in events]
    assert [name for name, _ in events] == [e.type for e in parsed]
    names = [e.type for e in parsed]
    assert names[:2] == ["message_start", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[2:-3]) == {"content_block_delta"}
    start, delta = parsed[0], parsed[-2]
    assert start.type == "message_start" and delta.type == "message_delta"
    assert start.message.model == "echo-1" and start.message.usage.input_tokens == 8
    assert delta.delta.stop_reason == "end_turn" and delta.usage.output_tokens == 4
    text = "".join(
        e.delta.text
        for e in parsed
        if e.type == "content_block_delta" and e.delta.type == "text_delta"
    )
    assert text == "Hi\nClaude, echo me"


# The official SDKs, end to end over an in-memory transport ---------------------------------------


def sdk_transport(http: Any = httpx) -> Any:
    """An `http.AsyncClient` whose requests are answered by echo_exchange, in memory."""

    async def handler(request: Any) -> Any:
        tail = request.url.path.removeprefix("/v1")
        answer = await echo_exchange(request.method, tail, request.headers, request.content)
        headers = list(answer.headers.items())
        return http.Response(answer.status, headers=headers, content=answer.content.iter_any())

    return http.AsyncClient(transport=http.MockTransport(handler))


def anthropic_http() -> Any:
    """The HTTP package the installed Anthropic SDK is built on (newer ones use httpx2)."""
    try:
        return importlib.import_module("httpx2")
    except ImportError:
        return httpx


async def test_the_openai_sdk_parses_answers_and_streams() -> None:
    async with sdk_transport() as http:
        client = openai.AsyncOpenAI(base_url="http://echo/v1", api_key="unused", http_client=http)
        completion = await client.chat.completions.create(model="echo-1", messages=CHAT)  # type: ignore[arg-type]
        assert completion.choices[0].message.content == "Hello there, gateway!"
        async with client.chat.completions.stream(
            model="echo-1",
            messages=CHAT,
            stream_options={"include_usage": True},  # type: ignore[arg-type]
        ) as stream:
            final = await stream.get_final_completion()
        assert final.choices[0].message.content == "Hello there, gateway!"
        assert final.usage is not None and final.usage.completion_tokens == 3
        vectors = await client.embeddings.create(model="e", input="some text")  # base64 asked
        assert vectors.data[0].embedding == pytest.approx(embedding("some text", 16), abs=1e-6)
        with pytest.raises(openai.NotFoundError) as missing:
            await client.post("/nowhere", cast_to=dict, body={"model": "echo-1"})
        assert "Invalid URL" in missing.value.message


async def test_the_anthropic_sdk_parses_answers_and_streams() -> None:
    async with sdk_transport(anthropic_http()) as http:
        client = anthropic.AsyncAnthropic(
            base_url="http://echo", api_key="unused", http_client=http
        )
        ask = anthropic_ask()
        message = await client.messages.create(**ask)
        assert message.content[0].text == "Hi\nClaude, echo me"  # type: ignore[union-attr]
        async with client.messages.stream(**ask) as stream:
            final = await stream.get_final_message()
        assert final.model_dump() | {"id": message.id} == message.model_dump()
        with pytest.raises(anthropic.BadRequestError):
            await client.messages.create(model="echo-1", messages=ask["messages"], max_tokens=0)


# Errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "tail"),
    [("POST", "/images/generations"), ("GET", "/chat/completions"), ("POST", "/")],
)
async def test_other_paths_get_an_openai_404(method: str, tail: str) -> None:
    response = await echo_exchange(method, tail, {}, b"not even json")
    assert (response.status, response.reason) == (404, "Not Found")
    error = json.loads(await response.read())["error"]
    assert error["type"] == "invalid_request_error" and "Invalid URL" in error["message"]


async def test_other_messages_paths_get_an_anthropic_404() -> None:
    response = await post("/messages/count_tokens", anthropic_ask())
    assert response.status == 404
    assert json.loads(await response.read())["error"]["type"] == "not_found_error"


@pytest.mark.parametrize(
    ("tail", "body"),
    [
        ("/chat/completions", b"{not json"),
        ("/chat/completions", b"\xff\xfe"),
        ("/chat/completions", b"[1, 2]"),
        ("/chat/completions", b'{"model": "m"}'),
        ("/chat/completions", b'{"model": "m", "messages": ["x"]}'),
        ("/chat/completions", b'{"messages": [{"role": "user", "content": "x"}]}'),
        ("/completions", b'{"model": "m", "prompt": 5}'),
        ("/embeddings", b'{"model": "m", "input": [true]}'),
        ("/embeddings", b'{"model": "m", "input": "x", "dimensions": 0}'),
    ],
)
async def test_bad_openai_requests_get_400(tail: str, body: bytes) -> None:
    response = await post(tail, body)
    assert response.status == 400
    error = json.loads(await response.read())["error"]
    assert error["type"] == "invalid_request_error" and error["message"]


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b'{"model": "m", "messages": [{"role": "user", "content": "x"}]}',  # no max_tokens
        b'{"model": "m", "max_tokens": 5, "messages": []}',
    ],
)
async def test_bad_anthropic_requests_get_400_in_anthropic_shape(body: bytes) -> None:
    response = await post("/messages", body)
    assert response.status == 400
    doc = json.loads(await response.read())
    assert doc["type"] == "error" and doc["error"]["type"] == "invalid_request_error"


# The response object, as the proxy uses it --------------------------------------------------------


async def test_json_answer_is_complete_and_read_twice() -> None:
    response = await post(
        "/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "héllo ✓"}]}
    )
    body = await response.read()
    assert await response.read() == body
    assert int(response.headers["content-length"]) == len(body) > len("héllo ✓")
    response.close()
    assert response.closed
    with pytest.raises(ClientConnectionError):
        await response.content.readany()


async def slow_stream() -> EchoResponse:
    user = {"role": "user", "content": "one two three four five"}
    ask = {"model": "echo-slow", "messages": [user], "stream": True}
    return await post("/chat/completions", ask)


async def test_echo_slow_streams_one_word_every_100_ms() -> None:
    response = await slow_stream()
    loop = asyncio.get_running_loop()
    first = await response.content.readany()
    assert b'"role": "assistant"' in first  # the opening chunk comes at once
    started = loop.time()
    words = []
    for _ in range(5):
        chunk = await response.content.readany()
        words.append(json.loads(chunk.split(b"\n\n")[0][6:])["choices"][0]["delta"]["content"])
    assert words == ["one ", "two ", "three ", "four ", "five"]
    assert loop.time() - started >= 5 * SLOW_WORD_PAUSE_S * 0.9
    # What follows the last word (finish chunk, [DONE]) is due with it.
    assert chunk.endswith(b"data: [DONE]\n\n")
    assert await response.content.readany() == b""


async def test_closing_stops_a_slow_stream_at_once_and_leaves_no_task() -> None:
    response = await slow_stream()
    await response.content.readany()
    reader = asyncio.ensure_future(response.content.readany())  # now waiting for a word
    await asyncio.sleep(0)
    assert not reader.done()
    loop = asyncio.get_running_loop()
    closed_at = loop.time()
    response.close()
    with pytest.raises(ClientConnectionError):
        await reader
    assert loop.time() - closed_at < SLOW_WORD_PAUSE_S / 2
    assert asyncio.all_tasks() == {asyncio.current_task()}
    with pytest.raises(ClientConnectionError):
        await response.content.readany()


async def test_a_cancelled_reader_leaves_the_stream_closable() -> None:
    response = await slow_stream()
    await response.content.readany()
    reader = asyncio.ensure_future(response.content.readany())
    await asyncio.sleep(0)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    response.release()
    assert response.closed
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_echo_slow_not_streamed_answers_after_the_whole_delay() -> None:
    user = {"role": "user", "content": "a b c"}
    loop = asyncio.get_running_loop()
    started = loop.time()
    _, doc = await whole("/chat/completions", {"model": "echo-slow", "messages": [user]})
    assert loop.time() - started >= 3 * SLOW_WORD_PAUSE_S * 0.9
    assert doc["choices"][0]["message"]["content"] == "a b c"
    # A client that leaves meanwhile cancels the wait.
    waiting = asyncio.ensure_future(
        post("/chat/completions", {"model": "echo-slow", "messages": [user]})
    )
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
