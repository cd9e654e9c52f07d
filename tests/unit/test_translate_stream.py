"""Streams translated event by event, whatever the chunk boundaries, ending as they must."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mini_llm.translate import (
    AnthropicToOpenAIStream,
    OpenAIToAnthropicStream,
    StreamTranslator,
    stream_translator,
)
from mini_llm.translate.sse import EventReader

from .translate_samples import (
    ANTHROPIC_EVENTS,
    ANTHROPIC_STREAM,
    MESSAGE_START,
    MESSAGE_STOP,
    OPENAI_CHUNKS,
    OPENAI_STREAM,
    USAGE,
    anthropic_sse,
    block_delta,
    block_start,
    chunk,
    message_delta,
    openai_sse,
    parse_sse,
    tool_delta,
)

ANTHROPIC_ERROR = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


def to_openai(include_usage: bool = False) -> AnthropicToOpenAIStream:
    return AnthropicToOpenAIStream("claude-sonnet", include_usage=include_usage, created=7)


def run(translator: StreamTranslator, raw: bytes) -> bytes:
    return translator.feed(raw) + translator.close()


def deltas(raw: bytes) -> list[Any]:
    """The OpenAI output as its choice deltas, finish reasons, usage and [DONE]."""
    out: list[Any] = []
    for _, doc in parse_sse(raw):
        if not isinstance(doc, dict) or "error" in doc:
            out.append(doc)
        elif doc["choices"]:
            choice = doc["choices"][0]
            out.append(choice["finish_reason"] or choice["delta"])
        else:
            out.append({"usage": doc["usage"]})
    return out


# Anthropic -> OpenAI -----------------------------------------------------------------------------


def test_an_anthropic_stream_as_chat_completion_chunks() -> None:
    raw = run(to_openai(include_usage=True), ANTHROPIC_STREAM)
    call = {"index": 0, "id": "toolu_01", "type": "function"}
    assert deltas(raw) == [
        {"role": "assistant", "content": ""},
        {"content": "Hello"},
        {"content": ", wörld"},
        {"tool_calls": [{**call, "function": {"name": "get_weather", "arguments": ""}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]},
        "tool_calls",
        {
            "usage": {
                "prompt_tokens": 30,
                "completion_tokens": 42,
                "total_tokens": 72,
                "prompt_tokens_details": {"cached_tokens": 5},
            }
        },
        "[DONE]",
    ]
    for _, doc in parse_sse(raw)[:-1]:
        assert doc["id"] == "msg_01"
        assert doc["object"] == "chat.completion.chunk"
        assert (doc["model"], doc["created"]) == ("claude-sonnet", 7)
    assert b": ping\n\n" in raw
    assert b"think" not in raw and b"sig" not in raw
    assert raw.endswith(b"data: [DONE]\n\n")


def test_the_usage_chunk_only_when_the_client_asked() -> None:
    raw = run(to_openai(), ANTHROPIC_STREAM)
    assert not any(isinstance(d, dict) and "usage" in d for d in deltas(raw))
    stream = stream_translator(
        {"model": "m", "stream_options": {"include_usage": True}}, to="openai"
    )
    assert isinstance(stream, AnthropicToOpenAIStream) and stream.include_usage
    stream = stream_translator({"model": "m", "stream_options": None}, to="openai")
    assert isinstance(stream, AnthropicToOpenAIStream) and not stream.include_usage
    assert isinstance(stream_translator({"model": "m"}, to="anthropic"), OpenAIToAnthropicStream)


def test_each_event_is_written_as_soon_as_it_is_complete() -> None:
    translator = to_openai()
    outputs = [translator.feed(anthropic_sse(event)) for event in ANTHROPIC_EVENTS]
    # Thinking, block stops and the empty first fragment give nothing; everything else at once.
    assert [bool(o) for o in outputs] == [
        True, True, False, False, False, False, False, True, True,
        False, True, False, True, True, False, True, True,
    ]  # fmt: skip
    assert translator.close() == b""


def test_an_upstream_error_event_ends_the_stream_as_an_openai_error() -> None:
    translator = to_openai()
    raw = translator.feed(anthropic_sse(*ANTHROPIC_EVENTS[:8], ANTHROPIC_ERROR))
    assert deltas(raw)[-1] == {
        "error": {
            "message": "Overloaded",
            "type": "server_error",
            "param": None,
            "code": "overloaded_error",
        }
    }
    assert translator.failed and not translator.complete
    assert translator.feed(anthropic_sse(*ANTHROPIC_EVENTS[8:])) == b""
    assert translator.close() == b""
    assert b"[DONE]" not in raw


def test_an_error_before_any_content_fails_the_stream() -> None:
    translator = to_openai()
    raw = translator.feed(anthropic_sse(MESSAGE_START, ANTHROPIC_ERROR))
    assert translator.failed
    assert b'"error"' in raw


def test_a_stream_cut_short_gets_an_error_and_no_invented_done() -> None:
    translator = to_openai()
    raw = translator.feed(ANTHROPIC_STREAM[: ANTHROPIC_STREAM.index(b"event: message_delta")])
    end = translator.close()
    assert b"[DONE]" not in raw + end
    error = json.loads(end.removeprefix(b"data: "))["error"]
    assert error["code"] == "upstream_stream_error"
    assert "ended" in error["message"]
    assert translator.failed


def test_a_stream_cut_inside_an_event_does_not_end_cleanly() -> None:
    translator = to_openai()
    cut = ANTHROPIC_STREAM.index(b"event: message_stop") + 10
    raw = run(translator, ANTHROPIC_STREAM[:cut])
    assert b"[DONE]" not in raw and translator.failed


def test_the_caller_can_end_a_broken_stream_with_an_error() -> None:
    translator = to_openai()
    translator.feed(anthropic_sse(*ANTHROPIC_EVENTS[:8]))
    end = translator.fail("provider `anthropic` closed the connection mid-stream")
    assert json.loads(end.removeprefix(b"data: ")) == {
        "error": {
            "message": "provider `anthropic` closed the connection mid-stream",
            "type": "server_error",
            "param": None,
            "code": "upstream_stream_error",
        }
    }
    assert translator.fail("again") == b"" and translator.close() == b""


def test_a_finish_chunk_even_without_message_delta() -> None:
    raw = run(to_openai(), anthropic_sse(MESSAGE_START, MESSAGE_STOP))
    assert deltas(raw) == [{"role": "assistant", "content": ""}, "stop", "[DONE]"]


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("max_tokens", "length"),
        ("stop_sequence", "stop"),
        ("refusal", "content_filter"),
    ],
)
def test_stream_stop_reasons(stop_reason: str, finish: str) -> None:
    raw = run(
        to_openai(), anthropic_sse(MESSAGE_START, message_delta(stop_reason, 1), MESSAGE_STOP)
    )
    assert deltas(raw)[1] == finish


def test_text_in_a_block_start_and_input_given_whole() -> None:
    events = [
        MESSAGE_START,
        block_start(0, {"type": "text", "text": "Hi"}),
        block_start(1, {"type": "tool_use", "id": "t", "name": "f", "input": {"a": 1}}),
        block_delta(7, {"type": "input_json_delta", "partial_json": "ignored"}),
        block_delta(0, {"type": "citations_delta", "citation": {}}),
    ]
    out = deltas(to_openai().feed(anthropic_sse(*events)))
    assert out[1:] == [
        {"content": "Hi"},
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "t",
                    "type": "function",
                    "function": {"name": "f", "arguments": '{"a":1}'},
                }
            ]
        },
    ]


def test_unreadable_events_are_skipped() -> None:
    raw = b"event: x\ndata: {not json\n\ndata: [1]\n\nevent: future_event\ndata: {}\n\n"
    assert to_openai().feed(raw) == b""


# OpenAI -> Anthropic -----------------------------------------------------------------------------


def to_anthropic() -> OpenAIToAnthropicStream:
    return OpenAIToAnthropicStream("gpt-4o")


def events(raw: bytes) -> list[tuple[str, Any]]:
    out = parse_sse(raw)
    for name, doc in out:
        assert name == doc["type"]  # the Anthropic SDK reads the event name
    return out


def test_openai_chunks_as_an_anthropic_stream() -> None:
    raw = run(to_anthropic(), OPENAI_STREAM)
    docs = [doc for _, doc in events(raw)]
    assert docs[0] == {
        "type": "message_start",
        "message": {
            "id": "chatcmpl-01",
            "type": "message",
            "role": "assistant",
            "model": "gpt-4o",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        },
    }
    assert docs[1:] == [
        block_start(0, {"type": "text", "text": ""}),
        block_delta(0, {"type": "text_delta", "text": "Hello"}),
        block_delta(0, {"type": "text_delta", "text": ", wörld"}),
        {"type": "content_block_stop", "index": 0},
        block_start(1, {"type": "tool_use", "id": "call_a", "name": "f", "input": {}}),
        block_delta(1, {"type": "input_json_delta", "partial_json": '{"x":'}),
        block_delta(1, {"type": "input_json_delta", "partial_json": " 1}"}),
        {"type": "content_block_stop", "index": 1},
        block_start(2, {"type": "tool_use", "id": "call_b", "name": "g", "input": {}}),
        block_delta(2, {"type": "input_json_delta", "partial_json": "{}"}),
        {"type": "content_block_stop", "index": 2},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {
                "input_tokens": 20,
                "output_tokens": 12,
                "cache_read_input_tokens": 10,
                "cache_creation_input_tokens": 0,
            },
        },
        MESSAGE_STOP,
    ]


def test_an_openai_stream_error_becomes_an_anthropic_error_event() -> None:
    error = {
        "error": {
            "message": "Rate limited",
            "type": "rate_limit_error",
            "code": "rate_limit_exceeded",
        }
    }
    translator = to_anthropic()
    raw = translator.feed(openai_sse(*OPENAI_CHUNKS[:3], error, *OPENAI_CHUNKS[3:]))
    assert events(raw)[-1] == (
        "error",
        {"type": "error", "error": {"type": "rate_limit_error", "message": "Rate limited"}},
    )
    assert b"message_stop" not in raw and translator.failed
    assert translator.close() == b""


def test_an_unknown_openai_error_type_is_an_api_error() -> None:
    raw = to_anthropic().feed(openai_sse({"error": {"message": "boom", "type": "server_error"}}))
    assert events(raw) == [
        ("error", {"type": "error", "error": {"type": "api_error", "message": "boom"}})
    ]


def test_an_openai_stream_without_done_gets_an_error_not_message_stop() -> None:
    translator = to_anthropic()
    raw = run(translator, openai_sse(*OPENAI_CHUNKS[:-1]))  # finish and usage came, [DONE] did not
    assert b"message_stop" not in raw
    assert events(raw)[-1][0] == "error"


def test_provider_variants_of_tool_call_chunks() -> None:
    whole = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}}
    no_index = [
        chunk({"tool_calls": [whole]}),
        chunk({"tool_calls": [{"id": "c2", "function": {"name": "g", "arguments": '{"b"'}}]}),
        chunk({"tool_calls": [{"function": {"arguments": ": 2}"}}]}),
        chunk({}, "tool_calls", usage=USAGE),
        "[DONE]",
    ]
    docs = [doc for _, doc in events(run(to_anthropic(), openai_sse(*no_index)))]
    assert [d["type"] for d in docs] == [
        "message_start",
        "content_block_start", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop",
    ]  # fmt: skip
    assert docs[2]["delta"]["partial_json"] == '{"a":1}'
    assert [docs[5]["delta"]["partial_json"], docs[6]["delta"]["partial_json"]] == ['{"b"', ": 2}"]
    assert docs[0]["message"]["usage"] == {"input_tokens": 0, "output_tokens": 0}
    assert docs[-2]["usage"]["output_tokens"] == 12


def test_usage_in_the_first_chunk_fills_message_start() -> None:
    raw = to_anthropic().feed(openai_sse(chunk({"role": "assistant"}, usage=USAGE)))
    assert events(raw)[0][1]["message"]["usage"]["input_tokens"] == 20


def test_text_after_a_tool_call_opens_a_new_block_and_refusals_are_text() -> None:
    stream = openai_sse(
        chunk(tool_delta(0, id="c", function={"name": "f", "arguments": "{}"})),
        chunk({"refusal": "No."}),
        chunk({"content": "x"}, "content_filter"),
        chunk({"content": "ignored"}) | {"choices": [{"index": 1, "delta": {"content": "n=2"}}]},
        "[DONE]",
    )
    docs = [doc for _, doc in events(run(to_anthropic(), stream))]
    assert [d["type"] for d in docs] == [
        "message_start",
        "content_block_start", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop",
    ]  # fmt: skip
    assert docs[4]["index"] == 1 and docs[6]["delta"]["text"] == "x"
    assert docs[-2]["delta"]["stop_reason"] == "refusal"
    assert docs[-2]["usage"] == {"output_tokens": 0}


def test_done_alone_still_makes_a_whole_message() -> None:
    docs = [doc["type"] for _, doc in events(run(to_anthropic(), b"data: [DONE]\n\n"))]
    assert docs == ["message_start", "message_delta", "message_stop"]


def test_a_last_event_without_its_blank_line_still_counts() -> None:
    translator = to_anthropic()
    raw = run(translator, OPENAI_STREAM.removesuffix(b"\n\n"))
    assert translator.complete and raw.endswith(
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )


# Both ways ---------------------------------------------------------------------------------------


def test_round_trip_through_both_translators_keeps_the_content() -> None:
    there = run(to_anthropic(), OPENAI_STREAM)
    back = run(AnthropicToOpenAIStream("gpt-4o", include_usage=True, created=1), there)
    assert deltas(back)[1:3] == [{"content": "Hello"}, {"content": ", wörld"}]
    assert deltas(back)[-2]["usage"] == USAGE
    assert deltas(back)[-3:-1][0] == "tool_calls"


STREAMS = [
    (lambda: to_openai(include_usage=True), ANTHROPIC_STREAM),
    (lambda: to_openai(), ANTHROPIC_STREAM.replace(b"\n", b"\r\n")),
    (lambda: to_openai(), anthropic_sse(*ANTHROPIC_EVENTS[:9], ANTHROPIC_ERROR)),
    (to_anthropic, OPENAI_STREAM),
    (to_anthropic, OPENAI_STREAM.replace(b"\n", b"\r")),
    (to_anthropic, OPENAI_STREAM[:-30]),
]


@given(
    which=st.integers(0, len(STREAMS) - 1),
    cuts=st.lists(st.floats(0, 1), max_size=40),
)
def test_any_split_of_a_stream_gives_the_same_bytes(which: int, cuts: list[float]) -> None:
    make, raw = STREAMS[which]
    whole = run(make(), raw)
    points = sorted({int(c * len(raw)) for c in cuts})
    pieces = [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]
    translator = make()
    assert b"".join(translator.feed(p) for p in pieces) + translator.close() == whole


def test_byte_by_byte_feeding_holds_back_only_the_unfinished_event() -> None:
    translator = to_anthropic()
    out = b""
    for i in range(len(OPENAI_STREAM)):
        out += translator.feed(OPENAI_STREAM[i : i + 1])
    assert out == run(to_anthropic(), OPENAI_STREAM)
    assert translator.complete and translator.close() == b""


@given(model=st.text(), message_id=st.text(), text=st.text(min_size=1))
def test_a_text_chunk_is_the_json_of_its_whole_document(
    model: str, message_id: str, text: str
) -> None:
    # Text chunks reuse the envelope's JSON; the bytes must be those of the whole document.
    start = {**MESSAGE_START, "message": {**MESSAGE_START["message"], "id": message_id}}
    translator = AnthropicToOpenAIStream(model, created=3)
    raw = anthropic_sse(start, block_delta(0, {"type": "text_delta", "text": text}))
    out = translator.feed(raw)
    expected = {
        "id": message_id,
        "object": "chat.completion.chunk",
        "created": 3,
        "model": model,
        "choices": [
            {"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": None}
        ],
    }
    compact = json.dumps(expected, ensure_ascii=False, separators=(",", ":"))
    assert out.split(b"\n\n")[1] == b"data: " + compact.encode()


# The SSE reader ----------------------------------------------------------------------------------


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_the_reader_takes_every_line_ending(eol: bytes) -> None:
    raw = b"event: a" + eol + b"data: 1" + eol + b"data: 2" + eol + eol + b": c" + eol + eol
    reader = EventReader()
    got = [e for i in range(len(raw)) for e in reader.feed(raw[i : i + 1])] + reader.close()
    assert [(e.event, e.data) for e in got] == [("a", "1\n2")]


def test_the_reader_skips_a_byte_order_mark_and_ignores_other_fields() -> None:
    reader = EventReader()
    got = reader.feed(b"\xef\xbb") + reader.feed(b"\xbfid: 3\nretry: 5\ndata:x\n\n")
    assert [(e.event, e.data) for e in got] == [("", "x")]
    assert reader.close() == []
