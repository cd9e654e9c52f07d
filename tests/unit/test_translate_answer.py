"""Complete answers translated into the client's format, checked against the SDKs' models."""

from __future__ import annotations

import copy
import json
from typing import Any

import anthropic
import openai
import pytest

from mini_llm.translate import translate_answer

from .translate_samples import ANTHROPIC_MESSAGE, OPENAI_COMPLETION


def test_an_anthropic_message_as_a_chat_completion() -> None:
    out = translate_answer(ANTHROPIC_MESSAGE, to="openai", client_model="claude-sonnet", created=7)
    assert out == {
        "id": "msg_01",
        "object": "chat.completion",
        "created": 7,
        "model": "claude-sonnet",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Hello, wörld",
                    "refusal": None,
                    "tool_calls": [
                        {
                            "id": "toolu_01",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        }
                    ],
                },
                "logprobs": None,
                "finish_reason": "tool_calls",
            }
        ],
        # input_tokens leave out cache reads and writes; prompt_tokens count every one.
        "usage": {
            "prompt_tokens": 28,
            "completion_tokens": 42,
            "total_tokens": 70,
            "prompt_tokens_details": {"cached_tokens": 5},
        },
    }
    completion = openai.types.chat.ChatCompletion.model_validate(out)
    assert completion.choices[0].message.tool_calls is not None
    assert "think" not in (completion.choices[0].message.content or "")


def test_the_time_of_a_chat_completion_is_now_by_default() -> None:
    out = translate_answer(ANTHROPIC_MESSAGE, to="openai", client_model="c")
    assert isinstance(out["created"], int) and out["created"] > 1_600_000_000


def test_an_anthropic_message_without_text_has_null_content() -> None:
    body = {**ANTHROPIC_MESSAGE, "content": [ANTHROPIC_MESSAGE["content"][2]]}
    out = translate_answer(body, to="openai", client_model="c")
    assert out["choices"][0]["message"]["content"] is None
    openai.types.chat.ChatCompletion.model_validate(out)


def test_text_blocks_are_joined() -> None:
    blocks = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    body = {**ANTHROPIC_MESSAGE, "content": blocks, "stop_reason": "end_turn"}
    message = translate_answer(body, to="openai", client_model="c")["choices"][0]["message"]
    assert message == {"role": "assistant", "content": "ab", "refusal": None}


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("model_context_window_exceeded", "length"),
        (None, "stop"),
        ("something_new", "stop"),
    ],
)
def test_stop_reasons_become_finish_reasons(stop_reason: Any, finish_reason: str) -> None:
    body = {**ANTHROPIC_MESSAGE, "stop_reason": stop_reason}
    out = translate_answer(body, to="openai", client_model="c")
    assert out["choices"][0]["finish_reason"] == finish_reason
    openai.types.chat.ChatCompletion.model_validate(out)


def test_a_chat_completion_as_an_anthropic_message() -> None:
    out = translate_answer(OPENAI_COMPLETION, to="anthropic", client_model="gpt-4o")
    assert out == {
        "id": "chatcmpl-01",
        "type": "message",
        "role": "assistant",
        "model": "gpt-4o",
        "content": [
            {"type": "text", "text": "Hello, wörld"},
            {"type": "tool_use", "id": "call_a", "name": "f", "input": {"x": 1}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 20,
            "output_tokens": 12,
            "cache_read_input_tokens": 10,
            "cache_creation_input_tokens": 0,
        },
    }
    anthropic.types.Message.model_validate(out)


@pytest.mark.parametrize(
    ("finish_reason", "stop_reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("function_call", "tool_use"),
        ("content_filter", "refusal"),
        (None, "end_turn"),
    ],
)
def test_finish_reasons_become_stop_reasons(finish_reason: Any, stop_reason: str) -> None:
    body = copy.deepcopy(OPENAI_COMPLETION)
    body["choices"][0]["finish_reason"] = finish_reason
    out = translate_answer(body, to="anthropic", client_model="c")
    assert out["stop_reason"] == stop_reason
    anthropic.types.Message.model_validate(out)


@pytest.mark.parametrize("arguments", ['{"x": ', "[1]", None, ""])
def test_tool_arguments_that_are_no_json_object_become_an_empty_input(arguments: Any) -> None:
    body = copy.deepcopy(OPENAI_COMPLETION)
    body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] = arguments
    out = translate_answer(body, to="anthropic", client_model="c")
    assert out["content"][1]["input"] == {}
    anthropic.types.Message.model_validate(out)


def test_a_refusal_and_reasoning() -> None:
    body = copy.deepcopy(OPENAI_COMPLETION)
    message = body["choices"][0]["message"]
    message.update(content=None, refusal="I can't help.", tool_calls=None)
    message["reasoning_content"] = "private thoughts"  # some providers' reasoning field
    out = translate_answer(body, to="anthropic", client_model="c")
    assert out["content"] == [{"type": "text", "text": "I can't help."}]
    assert "private" not in json.dumps(out)


def test_odd_openai_answers_still_make_a_valid_message() -> None:
    for body in (
        {},
        {"choices": []},
        {"choices": [None], "usage": None},
        {"choices": [{"message": {"content": [{"type": "text", "text": "parts"}]}}]},
    ):
        out = translate_answer(body, to="anthropic", client_model="c")
        anthropic.types.Message.model_validate(out)
    assert out["content"] == [{"type": "text", "text": "parts"}]


def test_odd_anthropic_answers_still_make_a_valid_completion() -> None:
    for body in ({}, {"content": None, "usage": "x"}, {"content": ["x", {"type": "image"}]}):
        out = translate_answer(body, to="openai", client_model="c")
        openai.types.chat.ChatCompletion.model_validate(out)
