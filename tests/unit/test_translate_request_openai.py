"""Anthropic messages requests translated for an OpenAI-format provider, and round trips."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from mini_llm.translate import TranslationError, translate_request


def to_openai(doc: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    out, dropped = translate_request(doc, to="openai", **kwargs)
    assert dropped == []
    return out


def req(*messages: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "max_tokens": 100, "messages": list(messages), **fields}


USER = {"role": "user", "content": "Hi"}


def test_a_minimal_request() -> None:
    assert to_openai(req(USER, system="Be brief.")) == {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
        ],
        "max_completion_tokens": 100,
    }


def test_sampling_stop_and_user_carry_over() -> None:
    out = to_openai(
        req(USER, temperature=0.5, top_p=0.8, stop_sequences=["END"], metadata={"user_id": "u1"})
    )
    assert (out["temperature"], out["top_p"], out["stop"], out["user"]) == (0.5, 0.8, ["END"], "u1")


def test_a_stream_asks_the_provider_for_usage() -> None:
    out = to_openai(req(USER, stream=True))
    assert out["stream"] is True
    assert out["stream_options"] == {"include_usage": True}
    assert "stream_options" not in to_openai(req(USER, stream=False))


def test_system_blocks_become_one_system_message() -> None:
    blocks = [
        {"type": "text", "text": "One.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Two."},
    ]
    out = to_openai(req(USER, system=blocks))
    assert out["messages"][0] == {
        "role": "system",
        "content": [{"type": "text", "text": "One."}, {"type": "text", "text": "Two."}],
    }
    out = to_openai(req(USER, system=blocks[:1]))
    assert out["messages"][0] == {"role": "system", "content": "One."}


def test_content_blocks_become_parts() -> None:
    content = [
        {"type": "text", "text": "Look:"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"},
            "title": "a.pdf",
        },
        {
            "type": "document",
            "source": {"type": "text", "media_type": "text/plain", "data": "plain"},
        },
    ]
    out = to_openai(req({"role": "user", "content": content}))
    assert out["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Look:"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
                {
                    "type": "file",
                    "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBE"},
                },
                {"type": "text", "text": "plain"},
            ],
        }
    ]


def test_one_text_block_becomes_a_string() -> None:
    out = to_openai(req({"role": "user", "content": [{"type": "text", "text": "Hi"}]}))
    assert out["messages"] == [{"role": "user", "content": "Hi"}]


ASSISTANT = {
    "role": "assistant",
    "content": [
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"x": 1}},
        {"type": "tool_use", "id": "toolu_2", "name": "g", "input": {}},
    ],
}
RESULTS = {
    "role": "user",
    "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "one"},
        {
            "type": "tool_result",
            "tool_use_id": "toolu_2",
            "content": [{"type": "text", "text": "two"}],
        },
        {"type": "text", "text": "Thanks"},
    ],
}


def test_tool_use_becomes_tool_calls_and_results_tool_messages() -> None:
    out = to_openai(req(USER, ASSISTANT, RESULTS))
    assert out["messages"] == [
        {"role": "user", "content": "Hi"},
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "f", "arguments": '{"x":1}'},
                },
                {"id": "toolu_2", "type": "function", "function": {"name": "g", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "one"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "two"},
        {"role": "user", "content": "Thanks"},
    ]


def test_a_tool_result_with_no_content_is_an_empty_string() -> None:
    results = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1"}]}
    empty = {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "toolu_2", "content": []}],
    }
    out = to_openai(
        req(USER, ASSISTANT, results, {"role": "assistant", "content": "x"}, empty, USER)
    )
    assert out["messages"][2] == {"role": "tool", "tool_call_id": "toolu_1", "content": ""}
    assert out["messages"][4] == {"role": "tool", "tool_call_id": "toolu_2", "content": ""}


def test_an_assistant_turn_of_tool_calls_only_has_null_content() -> None:
    only = {"role": "assistant", "content": ASSISTANT["content"][1:]}
    out = to_openai(req(USER, only, RESULTS))
    assert out["messages"][1]["content"] is None


TOOL = {
    "name": "get_weather",
    "description": "Weather for a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    "cache_control": {"type": "ephemeral"},
}


def test_tools_become_functions() -> None:
    out = to_openai(
        req(USER, tools=[TOOL, {"name": "now", "input_schema": {"type": "object"}, "strict": True}])
    )
    assert out["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city.",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        },
        {
            "type": "function",
            "function": {"name": "now", "parameters": {"type": "object"}, "strict": True},
        },
    ]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, {"tool_choice": "auto"}),
        ({"type": "any"}, {"tool_choice": "required"}),
        ({"type": "none"}, {"tool_choice": "none"}),
        (
            {"type": "tool", "name": "get_weather"},
            {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
        ),
        (
            {"type": "auto", "disable_parallel_tool_use": True},
            {"tool_choice": "auto", "parallel_tool_calls": False},
        ),
        ({"type": "any", "disable_parallel_tool_use": False}, {"tool_choice": "required"}),
    ],
)
def test_tool_choice(choice: dict[str, Any], expected: dict[str, Any]) -> None:
    out = to_openai(req(USER, tools=[TOOL], tool_choice=choice))
    assert {k: out[k] for k in ("tool_choice", "parallel_tool_calls") if k in out} == expected


@pytest.mark.parametrize(
    ("fields", "messages", "field"),
    [
        ({"top_k": 5}, [USER], "top_k"),
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, [USER], "thinking"),
        ({"service_tier": "standard_only"}, [USER], "service_tier"),
        (
            {"mcp_servers": [{"type": "url", "url": "https://x", "name": "x"}]},
            [USER],
            "mcp_servers",
        ),
        ({"something_new": 1}, [USER], "something_new"),
        ({"metadata": {"user_id": "u", "other": 1}}, [USER], "metadata.other"),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, [USER], "tools[0]"),
        (
            {},
            [
                USER,
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "t", "signature": "s"},
                        {"type": "text", "text": "x"},
                    ],
                },
                USER,
            ],
            "messages[1].content[0]",
        ),
        (
            {},
            [
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t",
                            "content": "boom",
                            "is_error": True,
                        }
                    ],
                },
            ],
            "messages[1].content[0].is_error",
        ),
        (
            {},
            [
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t",
                            "content": [
                                {"type": "image", "source": {"type": "url", "url": "https://x"}}
                            ],
                        }
                    ],
                },
            ],
            "messages[1].content[0].content[0]",
        ),
        (
            {},
            [
                {
                    "role": "user",
                    "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}],
                }
            ],
            "messages[0].content[0]",
        ),
        ({}, [USER, {"role": "assistant", "content": "{"}], "messages[1]"),
    ],
)
def test_what_openai_cannot_carry_is_refused_or_dropped(
    fields: dict[str, Any], messages: list[dict[str, Any]], field: str
) -> None:
    doc = req(*messages, **fields)
    with pytest.raises(TranslationError) as caught:
        translate_request(doc, to="openai")
    assert caught.value.field == field
    assert "OpenAI" in str(caught.value) or "openai" in str(caught.value)
    _, dropped = translate_request(doc, to="openai", drop_unsupported=True)
    assert dropped == [field]


def test_neutral_values_need_no_counterpart() -> None:
    out = to_openai(
        req(USER, thinking={"type": "disabled"}, top_k=None, service_tier="auto", metadata={})
    )
    assert set(out) == {"model", "messages", "max_completion_tokens"}


def test_tool_choice_without_tools() -> None:
    assert "tool_choice" not in to_openai(req(USER, tool_choice={"type": "auto"}))
    with pytest.raises(TranslationError) as caught:
        translate_request(req(USER, tool_choice={"type": "any"}), to="openai")
    assert caught.value.field == "tool_choice" and not caught.value.droppable


def test_a_malformed_role_is_refused() -> None:
    with pytest.raises(TranslationError) as caught:
        translate_request(
            req({"role": "system", "content": "x"}), to="openai", drop_unsupported=True
        )
    assert caught.value.field == "messages[0].role"


def test_the_request_is_not_modified() -> None:
    doc = req(USER, ASSISTANT, RESULTS, system=[{"type": "text", "text": "S"}], tools=[TOOL])
    before = copy.deepcopy(doc)
    translate_request(doc, to="openai")
    assert doc == before


# Round trips -------------------------------------------------------------------------------------

OPENAI_CONVERSATION: dict[str, Any] = {
    "model": "m",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "w", "arguments": '{"c":"Paris"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "w", "arguments": '{"c":"Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": "rain"},
        {"role": "assistant", "content": "Paris is sunny, Rome rainy."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "And this?"},
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/"}},
            ],
        },
    ],
    "max_completion_tokens": 50,
    "temperature": 0.3,
    "stop": ["END"],
    "user": "u-9",
    "tools": [{"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}],
    "tool_choice": {"type": "function", "function": {"name": "w"}},
    "parallel_tool_calls": False,
}


def test_openai_to_anthropic_and_back_keeps_the_conversation() -> None:
    anthropic, _ = translate_request(OPENAI_CONVERSATION, to="anthropic")
    back, _ = translate_request(anthropic, to="openai")
    assert back == OPENAI_CONVERSATION


def test_anthropic_to_openai_and_back_keeps_the_conversation() -> None:
    doc = req(
        USER,
        ASSISTANT,
        RESULTS,
        system="S",
        tools=[{k: v for k, v in TOOL.items() if k != "cache_control"}],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        stop_sequences=["x"],
        metadata={"user_id": "u"},
        temperature=1,
    )
    openai, _ = translate_request(doc, to="openai")
    back, _ = translate_request(openai, to="anthropic")
    results = copy.deepcopy(RESULTS)
    results["content"][1]["content"] = "two"  # one text block is written as a string
    assert back == {**doc, "messages": [USER, ASSISTANT, results]}
