"""OpenAI chat completions requests translated for an Anthropic-format provider."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from mini_llm.translate import TranslationError, translate_request


def to_anthropic(doc: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    out, dropped = translate_request(doc, to="anthropic", **kwargs)
    assert dropped == []
    return out


def req(*messages: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"model": "claude-sonnet", "messages": list(messages), **fields}


USER = {"role": "user", "content": "Hi"}


def test_a_minimal_request_gets_the_default_max_tokens() -> None:
    assert to_anthropic(req(USER)) == {
        "model": "claude-sonnet",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 4096,
    }
    assert to_anthropic(req(USER), default_max_tokens=77)["max_tokens"] == 77


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"max_tokens": 10}, 10),
        ({"max_completion_tokens": 20}, 20),
        ({"max_tokens": 10, "max_completion_tokens": 20}, 20),
        ({"max_tokens": None}, 4096),
    ],
)
def test_max_tokens_comes_from_either_field(fields: dict[str, Any], expected: int) -> None:
    assert to_anthropic(req(USER, **fields))["max_tokens"] == expected


def test_sampling_settings_and_stream_carry_over() -> None:
    out = to_anthropic(
        req(USER, temperature=0.2, top_p=0.9, stream=True, stream_options={"include_usage": True})
    )
    assert (out["temperature"], out["top_p"], out["stream"]) == (0.2, 0.9, True)
    assert "stream_options" not in out  # the stream translator writes the usage chunk


@pytest.mark.parametrize(("stop", "expected"), [("END", ["END"]), (["a", "b"], ["a", "b"])])
def test_stop_becomes_stop_sequences(stop: Any, expected: list[str]) -> None:
    assert to_anthropic(req(USER, stop=stop))["stop_sequences"] == expected


def test_user_becomes_metadata_user_id() -> None:
    assert to_anthropic(req(USER, user="u-1"))["metadata"] == {"user_id": "u-1"}
    assert to_anthropic(req(USER, safety_identifier="s-1"))["metadata"] == {"user_id": "s-1"}
    same = req(USER, user="u-1", safety_identifier="u-1")
    assert to_anthropic(same)["metadata"] == {"user_id": "u-1"}
    with pytest.raises(TranslationError) as caught:
        translate_request(req(USER, user="u-1", safety_identifier="s-1"), to="anthropic")
    assert caught.value.field == "safety_identifier"


# System ------------------------------------------------------------------------------------------


def test_one_system_message_becomes_the_system_string() -> None:
    out = to_anthropic(req({"role": "system", "content": "Be brief."}, USER))
    assert out["system"] == "Be brief."
    assert out["messages"] == [{"role": "user", "content": "Hi"}]


def test_system_and_developer_messages_anywhere_become_system_blocks_in_order() -> None:
    out = to_anthropic(
        req(
            {"role": "system", "content": [{"type": "text", "text": "One."}]},
            USER,
            {"role": "developer", "content": "Two."},
        )
    )
    assert out["system"] == [{"type": "text", "text": "One."}, {"type": "text", "text": "Two."}]
    assert out["messages"] == [{"role": "user", "content": "Hi"}]


def test_cache_control_on_a_part_is_kept() -> None:
    mark = {"type": "ephemeral"}
    system = {"role": "system", "content": [{"type": "text", "text": "S", "cache_control": mark}]}
    out = to_anthropic(req(system, USER))
    assert out["system"] == [{"type": "text", "text": "S", "cache_control": mark}]


# User content ------------------------------------------------------------------------------------


def test_text_and_image_parts_become_blocks() -> None:
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {
            "type": "image_url",
            "image_url": {"url": "https://example.com/cat.jpg", "detail": "auto"},
        },
    ]
    out = to_anthropic(req({"role": "user", "content": content}))
    assert out["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
        },
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


def test_a_pdf_file_part_becomes_a_document_block() -> None:
    part = {
        "type": "file",
        "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBE"},
    }
    out = to_anthropic(req({"role": "user", "content": [part]}))
    assert out["messages"][0]["content"] == [
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"},
            "title": "a.pdf",
        }
    ]


def test_an_image_that_is_neither_a_url_nor_base64_is_malformed_even_when_dropping() -> None:
    part = {"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}
    with pytest.raises(TranslationError) as caught:
        translate_request(
            req({"role": "user", "content": [part]}), to="anthropic", drop_unsupported=True
        )
    assert caught.value.field == "messages[0].content[0].image_url.url"
    assert not caught.value.droppable
    assert caught.value.code == "invalid_request_error"


@pytest.mark.parametrize(
    ("part", "field"),
    [
        (
            {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "high"}},
            "messages[0].content[0].image_url.detail",
        ),
        (
            {"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}},
            "messages[0].content[0]",
        ),
        ({"type": "file", "file": {"file_id": "file-1"}}, "messages[0].content[0].file"),
    ],
)
def test_parts_without_an_anthropic_counterpart_are_named(part: dict[str, Any], field: str) -> None:
    doc = req({"role": "user", "content": [part, {"type": "text", "text": "x"}]})
    with pytest.raises(TranslationError) as caught:
        translate_request(doc, to="anthropic")
    assert caught.value.field == field
    out, dropped = translate_request(doc, to="anthropic", drop_unsupported=True)
    assert dropped == [field]
    assert {"type": "text", "text": "x"} in out["messages"][0]["content"]


# Tool calls and results --------------------------------------------------------------------------

CALLS = {
    "role": "assistant",
    "content": "Let me look.",
    "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}},
        {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": ""}},
    ],
}
RESULTS = [
    {"role": "tool", "tool_call_id": "call_1", "content": "one"},
    {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "two"}]},
]


def test_tool_calls_become_tool_use_blocks_and_results_one_user_turn() -> None:
    out = to_anthropic(req(USER, CALLS, *RESULTS, {"role": "user", "content": "Thanks"}))
    assert out["messages"] == [
        {"role": "user", "content": "Hi"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "call_1", "name": "f", "input": {"x": 1}},
                {"type": "tool_use", "id": "call_2", "name": "g", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "one"},
                {
                    "type": "tool_result",
                    "tool_use_id": "call_2",
                    "content": [{"type": "text", "text": "two"}],
                },
                {"type": "text", "text": "Thanks"},
            ],
        },
    ]


def test_an_assistant_message_with_only_tool_calls_has_no_empty_text() -> None:
    calls = {**CALLS, "content": None}
    out = to_anthropic(req(USER, calls, *RESULTS))
    assert [b["type"] for b in out["messages"][1]["content"]] == ["tool_use", "tool_use"]
    calls = {**CALLS, "content": ""}
    out = to_anthropic(req(USER, calls, *RESULTS))
    assert [b["type"] for b in out["messages"][1]["content"]] == ["tool_use", "tool_use"]


def test_consecutive_messages_of_one_role_are_merged() -> None:
    out = to_anthropic(
        req(
            USER,
            {"role": "user", "content": [{"type": "text", "text": "again"}]},
            {"role": "assistant", "content": "a"},
            {"role": "assistant", "content": "b"},
        )
    )
    assert out["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "again"}],
        },
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
        },
    ]


@pytest.mark.parametrize("arguments", ["{not json", "[1, 2]"])
def test_tool_call_arguments_must_be_a_json_object(arguments: str) -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": arguments}}
    doc = req(USER, {"role": "assistant", "tool_calls": [call]})
    with pytest.raises(TranslationError) as caught:
        translate_request(doc, to="anthropic", drop_unsupported=True)
    assert caught.value.field == "messages[1].tool_calls[0].function.arguments"


def test_a_refusal_in_the_history_is_kept_as_text() -> None:
    msg = {"role": "assistant", "content": None, "refusal": "I can't."}
    out = to_anthropic(req(USER, msg, {"role": "user", "content": "ok"}))
    assert out["messages"][1] == {
        "role": "assistant",
        "content": [{"type": "text", "text": "I can't."}],
    }


# Tools -------------------------------------------------------------------------------------------

TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def test_tools_get_an_input_schema() -> None:
    bare = {"type": "function", "function": {"name": "now"}}
    out = to_anthropic(req(USER, tools=[TOOL, bare]))
    assert out["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather for a city.",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
        {"name": "now", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert "tool_choice" not in out


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("none", None, {"type": "none"}),
        ("required", None, {"type": "any"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            None,
            {"type": "tool", "name": "get_weather"},
        ),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        ("none", False, {"type": "none"}),
        (None, True, None),
    ],
)
def test_tool_choice_and_parallel_tool_calls(choice: Any, parallel: Any, expected: Any) -> None:
    fields: dict[str, Any] = {"tools": [TOOL]}
    if choice is not None:
        fields["tool_choice"] = choice
    if parallel is not None:
        fields["parallel_tool_calls"] = parallel
    assert to_anthropic(req(USER, **fields)).get("tool_choice") == expected


def test_tool_choice_without_tools() -> None:
    assert "tool_choice" not in to_anthropic(req(USER, tool_choice="auto"))
    assert "tool_choice" not in to_anthropic(req(USER, tool_choice="none"))
    with pytest.raises(TranslationError) as caught:
        translate_request(req(USER, tool_choice="required"), to="anthropic")
    assert caught.value.field == "tool_choice"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        (
            {"tools": [{**TOOL, "function": {**TOOL["function"], "strict": True}}]},
            "tools[0].function.strict",
        ),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0]"),
        ({"tools": [TOOL], "tool_choice": {"type": "allowed_tools"}}, "tool_choice"),
    ],
)
def test_tool_features_without_a_counterpart(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(TranslationError) as caught:
        translate_request(req(USER, **fields), to="anthropic")
    assert caught.value.field == field
    assert translate_request(req(USER, **fields), to="anthropic", drop_unsupported=True)[1] == [
        field
    ]


# Fields that cannot be carried over --------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("n", 2),
        ("logprobs", True),
        ("top_logprobs", 3),
        ("response_format", {"type": "json_object"}),
        ("response_format", {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}),
        ("audio", {"voice": "alloy", "format": "wav"}),
        ("modalities", ["text", "audio"]),
        ("seed", 7),
        ("frequency_penalty", 0.5),
        ("presence_penalty", -1),
        ("logit_bias", {"50256": -100}),
        ("prediction", {"type": "content", "content": "x"}),
        ("store", True),
        ("metadata", {"k": "v"}),
        ("service_tier", "flex"),
        ("reasoning_effort", "high"),
        ("verbosity", "low"),
        ("web_search_options", {}),
        ("functions", [{"name": "f"}]),
        ("function_call", "auto"),
        ("prompt_cache_key", "k"),
        ("something_new", 1),
    ],
)
def test_a_field_without_a_counterpart_is_refused_or_dropped(name: str, value: Any) -> None:
    doc = req(USER, **{name: value})
    with pytest.raises(TranslationError) as caught:
        translate_request(doc, to="anthropic")
    assert caught.value.field == name
    assert caught.value.droppable
    assert caught.value.code == "unsupported_parameter"
    assert f"`{name}`" in str(caught.value)
    assert "drop_unsupported" in str(caught.value)
    out, dropped = translate_request(doc, to="anthropic", drop_unsupported=True)
    assert dropped == [name]
    assert name not in out


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("n", 1),
        ("logprobs", False),
        ("top_logprobs", None),
        ("response_format", {"type": "text"}),
        ("modalities", ["text"]),
        ("frequency_penalty", 0),
        ("presence_penalty", 0.0),
        ("logit_bias", {}),
        ("store", False),
        ("metadata", {}),
        ("service_tier", "auto"),
        ("reasoning_effort", None),
        ("seed", None),
    ],
)
def test_a_neutral_value_needs_no_counterpart(name: str, value: Any) -> None:
    out = to_anthropic(req(USER, **{name: value}))
    assert name not in out


def test_a_message_name_has_no_counterpart() -> None:
    doc = req({"role": "user", "content": "Hi", "name": "bob"})
    with pytest.raises(TranslationError) as caught:
        translate_request(doc, to="anthropic")
    assert caught.value.field == "messages[0].name"


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"model": "m", "messages": "Hi"}, "messages"),
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": ["Hi"]}, "messages[0]"),
        ({"model": "m", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        (
            {"model": "m", "messages": [{"role": "tool", "content": "x"}]},
            "messages[0].tool_call_id",
        ),
        (
            {"model": "m", "messages": [{"role": "user", "content": [{"type": "text"}]}]},
            "messages[0].content[0].text",
        ),
    ],
)
def test_malformed_requests_are_refused_even_when_dropping(doc: dict[str, Any], field: str) -> None:
    with pytest.raises(TranslationError) as caught:
        translate_request(doc, to="anthropic", drop_unsupported=True)
    assert caught.value.field == field
    assert not caught.value.droppable


def test_the_request_is_not_modified() -> None:
    doc = req(
        {"role": "system", "content": "S"}, USER, CALLS, *RESULTS, tools=[TOOL], stop="x", user="u"
    )
    before = copy.deepcopy(doc)
    translate_request(doc, to="anthropic")
    assert doc == before
