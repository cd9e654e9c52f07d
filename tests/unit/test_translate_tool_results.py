"""A tool result must answer a tool call made earlier: a 400 names it before going upstream."""

from __future__ import annotations

import pytest

from mini_llm.translate import TranslationError, translate_request


def test_an_openai_tool_message_without_its_call_is_refused() -> None:
    doc = {"model": "m", "messages": [{"role": "tool", "tool_call_id": "x", "content": "r"}]}
    with pytest.raises(TranslationError) as caught:
        translate_request(doc, to="anthropic")
    assert caught.value.field == "messages[0].tool_call_id" and not caught.value.droppable


def test_an_anthropic_tool_result_for_an_unknown_id_is_refused() -> None:
    result = {"type": "tool_result", "tool_use_id": "nope", "content": "x"}
    doc = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [result]}]}
    with pytest.raises(TranslationError) as caught:
        translate_request(doc, to="openai")
    assert caught.value.field == "messages[0].content[0].tool_use_id"


def test_a_tool_result_after_its_call_passes() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    doc = {
        "model": "m",
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "r"},
        ],
    }
    translated, _ = translate_request(doc, to="anthropic")
    assert translated["messages"][-1]["content"][0]["tool_use_id"] == "c1"
