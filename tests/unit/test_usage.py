"""Usage scanning: the same tokens however an answer is cut into chunks; usage chunks we asked
for are taken out of the stream and nothing else is touched."""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mini_llm.usage import (
    StrippingScanner,
    Usage,
    UsageScanner,
    scanner_for,
    usage_in,
    usage_of,
    wants_stream_usage,
    with_stream_usage,
)


def sse(doc: Any, event: str | None = None, crlf: bool = False) -> bytes:
    text = (f"event: {event}\n" if event else "") + f"data: {json.dumps(doc)}\n\n"
    return (text.replace("\n", "\r\n") if crlf else text).encode()


def chunk(content: str, usage: Any = "absent", choices: bool = True) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": content}}] if choices else [],
    }
    if usage != "absent":
        doc["usage"] = usage
    return doc


OPENAI_USAGE = {
    "prompt_tokens": 12,
    "completion_tokens": 7,
    "total_tokens": 19,
    "prompt_tokens_details": {"cached_tokens": 4},
}
# A stream that asked for usage: `"usage": null` everywhere, then the usage-only chunk.
OPENAI_CONTENT = [
    sse(chunk('the word "usage": {"prompt_tokens": 99}', usage=None)),
    sse(chunk("usage", usage=None)),
    sse(chunk("", usage=None)),
]
OPENAI_USAGE_CHUNK = sse(chunk("", usage=OPENAI_USAGE, choices=False))
OPENAI_STREAM = [*OPENAI_CONTENT, OPENAI_USAGE_CHUNK, b"data: [DONE]\n\n"]

ANTHROPIC_STREAM = [
    sse(
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "content": [],
                "usage": {
                    "input_tokens": 20,
                    "cache_read_input_tokens": 100,
                    "cache_creation_input_tokens": 5,
                    "output_tokens": 1,
                },
            },
        },
        "message_start",
    ),
    sse({"type": "ping"}, "ping"),
    sse(
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": '{"usage": {"output_tokens": 1000}}'},
        },
        "content_block_delta",
    ),
    sse(
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 42},
        },
        "message_delta",
    ),
    sse({"type": "message_stop"}, "message_stop"),
]


def cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for point in points:
        pieces.append(data[last:point])
        last = point
    pieces.append(data[last:])
    return pieces


def run(scanner: UsageScanner, pieces: list[bytes]) -> bytes:
    out = b"".join(scanner.feed(piece) for piece in pieces)
    return out + scanner.close()


cuts = st.lists(st.integers(min_value=0, max_value=10_000), max_size=40)


@given(cuts)
def test_an_openai_stream_reads_the_same_however_it_is_cut(points: list[int]) -> None:
    data = b"".join(OPENAI_STREAM)
    scanner = UsageScanner()
    assert run(scanner, cut(data, points)) == data
    assert scanner.usage == Usage(input=12, output=7, cached_input=4)


@given(cuts)
def test_an_anthropic_stream_adds_cache_reads_and_writes_to_input(points: list[int]) -> None:
    data = b"".join(ANTHROPIC_STREAM)
    scanner = UsageScanner()
    assert run(scanner, cut(data, points)) == data
    # message_start: 20 + 100 read + 5 written; message_delta's 42 replaces the first 1.
    assert scanner.usage == Usage(input=125, output=42, cached_input=100)


@given(cuts, st.booleans())
def test_the_usage_chunk_we_asked_for_is_taken_out(points: list[int], crlf: bool) -> None:
    events = [*OPENAI_CONTENT, OPENAI_USAGE_CHUNK, b"data: [DONE]\n\n"]
    if crlf:
        events = [e.replace(b"\n", b"\r\n") for e in events]
    scanner = StrippingScanner()
    out = run(scanner, cut(b"".join(events), points))
    assert out == b"".join(events[:3] + events[4:])
    assert scanner.usage == Usage(input=12, output=7, cached_input=4)


@given(cuts)
def test_stripping_keeps_usage_that_rides_with_content(points: list[int]) -> None:
    # Some OpenAI-compatible servers put usage in the last content chunk: it is kept.
    events = [sse(chunk("a", usage=None)), sse(chunk("b", usage=OPENAI_USAGE)), b"data: [DONE]\n\n"]
    data = b"".join(events)
    scanner = StrippingScanner()
    assert run(scanner, cut(data, points)) == data
    assert scanner.usage == Usage(input=12, output=7, cached_input=4)


def test_stripping_passes_complete_events_at_once_and_holds_only_a_partial_one() -> None:
    scanner = StrippingScanner()
    first, second = OPENAI_CONTENT[0], OPENAI_CONTENT[1]
    assert scanner.feed(first + second[:10]) == first
    assert scanner.feed(second[10:]) == second
    assert scanner.feed(OPENAI_USAGE_CHUNK[:30]) == b""
    assert scanner.feed(OPENAI_USAGE_CHUNK[30:] + b"data: [DONE]\n\n") == b"data: [DONE]\n\n"
    assert scanner.close() == b""


def test_stripping_gives_back_an_unfinished_event_at_the_end() -> None:
    scanner = StrippingScanner()
    assert scanner.feed(b'data: {"partial') == b""
    assert scanner.close() == b'data: {"partial'


JSON_ANSWERS = [
    (
        {
            "id": "chatcmpl-1",
            "choices": [{"message": {"content": 'say "usage": {"prompt_tokens": 1}'}}],
            "usage": OPENAI_USAGE,
        },
        Usage(12, 7, 4),
    ),
    (
        {
            "type": "message",
            "content": [{"type": "text", "text": "usage"}],
            "usage": {"input_tokens": 3, "output_tokens": 9, "cache_read_input_tokens": 2},
        },
        Usage(5, 9, 2),
    ),
    (  # OpenAI responses: input_tokens already counts the cached ones
        {
            "object": "response",
            "usage": {
                "input_tokens": 30,
                "input_tokens_details": {"cached_tokens": 10},
                "output_tokens": 8,
            },
        },
        Usage(30, 8, 10),
    ),
    ({"object": "list", "data": [], "usage": {"prompt_tokens": 6, "total_tokens": 6}}, Usage(6)),
    ({"id": "x", "usage": None}, None),
    ({"id": "x"}, None),
]


@pytest.mark.parametrize(("doc", "expected"), JSON_ANSWERS)
@pytest.mark.parametrize("indent", [None, 2])
def test_json_answers(doc: dict[str, Any], expected: Usage | None, indent: int | None) -> None:
    body = json.dumps(doc, indent=indent).encode()
    scanner = scanner_for(200, "application/json", None)
    assert scanner is not None
    scanner.feed(body)
    assert scanner.usage == expected
    assert usage_in(body, 200, "application/json", None) == expected  # read whole


@given(cuts)
def test_a_big_json_answer_read_in_chunks(points: list[int]) -> None:
    doc = {"id": "x", "choices": [{"message": {"content": "x" * 20_000}}], "usage": OPENAI_USAGE}
    data = json.dumps(doc).encode()
    scanner = UsageScanner()
    run(scanner, cut(data, [p * 3 for p in points]))
    assert scanner.usage == Usage(12, 7, 4)


@settings(max_examples=30)
@given(cuts, st.sampled_from(["gzip", "deflate"]))
def test_compressed_json_answers_are_read_and_passed_on_untouched(
    points: list[int], encoding: str
) -> None:
    body = json.dumps({"id": "x", "filler": "y" * 5000, "usage": OPENAI_USAGE}).encode()
    data = gzip.compress(body) if encoding == "gzip" else zlib.compress(body)
    scanner = scanner_for(200, "application/json", encoding)
    assert scanner is not None
    assert run(scanner, cut(data, points)) == data
    assert scanner.usage == Usage(12, 7, 4)


def test_a_body_that_is_not_what_its_encoding_says_is_passed_on() -> None:
    scanner = scanner_for(200, "application/json", "gzip")
    assert scanner is not None
    assert scanner.feed(b"not gzip at all") == b"not gzip at all"
    assert scanner.usage is None


def test_whole_answers_compressed_or_not_json() -> None:
    body = json.dumps({"id": "x", "usage": OPENAI_USAGE}).encode()
    assert usage_in(gzip.compress(body), 200, "application/json", "gzip") == Usage(12, 7, 4)
    assert usage_in(body, 500, "application/json", None) is None
    assert usage_in(body, 200, "text/plain", None) is None
    assert usage_in(body, 200, "application/json", "br") is None
    assert usage_in(b'{"usage": null}', 200, "application/json", None) is None


def test_what_is_not_scanned() -> None:
    assert scanner_for(400, "application/json", None) is None  # errors carry no usage
    assert scanner_for(200, "audio/mpeg", None) is None
    assert scanner_for(200, "application/json", "br") is None
    assert isinstance(scanner_for(200, "text/event-stream", None, strip=True), StrippingScanner)


def test_usage_objects_in_other_words_are_ignored() -> None:
    assert usage_of({"total": 3}) is None
    assert usage_of({"prompt_tokens": "3", "completion_tokens": -1}) == Usage()
    assert usage_of({"input_tokens": True}) == Usage()


def test_an_unfinished_object_is_waited_for_but_not_forever() -> None:
    scanner = UsageScanner()
    scanner.feed(b'data: {"usage": {"prompt_tokens": 1, "x": "' + b"a" * 10_000)
    scanner.feed(b'"}}\n\n')
    assert scanner.usage is None  # too big to be a usage object: not waited for
    scanner.feed(b'data: {"usage": {"prompt_tokens": 2}}\n\n')
    assert scanner.usage == Usage(input=2)


@pytest.mark.parametrize(
    ("tail", "doc", "wanted"),
    [
        ("/chat/completions", {"stream": True}, True),
        ("/chat/completions", {"stream": True, "stream_options": {"include_usage": False}}, True),
        ("/chat/completions", {"stream": True, "stream_options": {"include_usage": True}}, False),
        ("/chat/completions", {"stream": True, "stream_options": "odd"}, False),
        ("/chat/completions", {"stream": False}, False),
        ("/chat/completions", {}, False),
        ("/completions", {"stream": True}, False),
        ("/messages", {"stream": True}, False),
    ],
)
def test_which_requests_get_usage_asked_for(tail: str, doc: dict[str, Any], wanted: bool) -> None:
    assert wants_stream_usage(tail, doc) is wanted


def test_asking_for_usage_adds_to_the_clients_bytes() -> None:
    body = b'{"model": "b", "stream": true, "messages": [{"role": "user", "content": "}"}]}\n '
    sent = with_stream_usage(body, json.loads(body), "b")
    assert sent == body[:-3] + b',"stream_options":{"include_usage":true}}\n '
    assert json.loads(sent)["stream_options"] == {"include_usage": True}


def test_asking_for_usage_keeps_the_clients_other_stream_options() -> None:
    doc = {"model": "a", "stream": True, "stream_options": {"other": 1}, "messages": []}
    sent = json.loads(with_stream_usage(json.dumps(doc).encode(), doc, "b"))
    assert sent == {
        "model": "b",
        "stream": True,
        "stream_options": {"other": 1, "include_usage": True},
        "messages": [],
    }
    assert list(sent) == ["model", "stream", "stream_options", "messages"]
