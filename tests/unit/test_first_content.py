"""Telling when an event stream has begun to answer, or failed first, at any chunk split."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from mini_llm.first_content import StreamStart


def openai(delta: dict[str, object], finish: str | None = None) -> bytes:
    chunk = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def anthropic(name: str, data: dict[str, object]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


ROLE = openai({"role": "assistant", "content": ""})
TEXT = openai({"content": "Hel"})
TOOL = openai({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f"}}]})
ERROR = b'data: {"error": {"message": "overloaded", "type": "server_error"}}\n\n'
START = anthropic("message_start", {"type": "message_start", "message": {}})
PING = anthropic("ping", {"type": "ping"})
DELTA = anthropic("content_block_delta", {"type": "content_block_delta", "index": 0})
AN_ERROR = anthropic("error", {"type": "error", "error": {"type": "overloaded_error"}})


def verdict(anthropic_format: bool, *chunks: bytes) -> str:
    start = StreamStart(anthropic_format)
    for chunk in chunks:
        start.feed(chunk)
    return start.verdict


def test_openai_streams() -> None:
    assert verdict(False, ROLE) == "pending"  # a role chunk shows nothing yet
    assert verdict(False, ROLE, TEXT) == "content"
    assert verdict(False, ROLE, TOOL) == "content"
    assert verdict(False, ROLE, ERROR, TEXT) == "failed"
    assert verdict(False, b"event: error\ndata: {}\n\n") == "failed"
    assert verdict(False, ROLE, openai({}, "stop"), b"data: [DONE]\n\n") == "complete"
    assert verdict(False, b"data: [DONE]\n\n") == "complete"
    assert verdict(False, b": keep-alive\n\n", TEXT) == "content"


def test_anthropic_streams() -> None:
    assert verdict(True, START, PING) == "pending"
    assert verdict(True, START, PING, DELTA) == "content"
    assert verdict(True, START, AN_ERROR) == "failed"
    assert verdict(True, START, anthropic("message_stop", {})) == "complete"


def test_everything_read_is_held_for_the_client() -> None:
    start = StreamStart(False)
    for chunk in (ROLE, TEXT[:10], TEXT[10:]):
        start.feed(chunk)
    assert b"".join(start.held) == ROLE + TEXT


@given(st.lists(st.integers(min_value=1, max_value=40), max_size=30), st.booleans())
def test_any_split_gives_the_same_verdict(cuts: list[int], anthropic_format: bool) -> None:
    whole = START + PING + DELTA if anthropic_format else ROLE + b": c\r\n\r\n" + TEXT
    pieces, at = [], 0
    for cut in cuts:
        pieces.append(whole[at : at + cut])
        at += cut
    pieces.append(whole[at:])
    assert verdict(anthropic_format, *[p for p in pieces if p]) == "content"
