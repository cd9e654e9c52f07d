"""Pieces of the client commands that need no gateway: API shape, error text, where to go."""

from __future__ import annotations

import pytest

from mini_llm.client import Gateway, api_for, error_message, request_for


@pytest.mark.parametrize(
    ("model", "owner", "api"),
    [
        ("claude-sonnet", None, "anthropic"),
        ("Claude-3", None, "anthropic"),
        ("anthropic:some-model", None, "anthropic"),
        ("mock:claude-3-haiku", None, "anthropic"),
        ("smart", "anthropic", "anthropic"),
        ("gpt-4o", "openai", "openai"),
        ("demo", "echo", "openai"),
        ("ollama:llama3:8b", None, "openai"),
        ("anthropic", None, "openai"),  # a bare name, not `provider:`
    ],
)
def test_api_shape(model: str, owner: str | None, api: str) -> None:
    assert api_for(model, owner) == api


def test_requests_in_each_shape() -> None:
    messages = [{"role": "user", "content": "hi"}]
    path, body, headers = request_for(
        "anthropic", "m", messages, system="S", stream=True, max_tokens=5
    )
    assert (path, headers) == ("/v1/messages", {"anthropic-version": "2023-06-01"})
    assert body == {
        "model": "m",
        "max_tokens": 5,
        "messages": messages,
        "system": "S",
        "stream": True,
    }
    path, body, headers = request_for(
        "openai", "m", messages, system=None, stream=False, max_tokens=5
    )
    assert (path, headers) == ("/v1/chat/completions", {})
    assert body == {"model": "m", "messages": messages, "max_tokens": 5}
    # Anthropic requires a limit; OpenAI-style APIs get none unless asked.
    _, body, _ = request_for("anthropic", "m", messages, system=None, stream=False, max_tokens=None)
    assert body["max_tokens"] == 1024
    _, body, _ = request_for("openai", "m", messages, system=None, stream=True, max_tokens=None)
    assert "max_tokens" not in body


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b'{"error": {"message": "no", "type": "t", "code": "c"}}', "c: no"),
        (b'{"type": "error", "error": {"type": "not_found_error", "message": "gone"}}',
         "not_found_error: gone"),
        (b"<html>bad gateway</html>", "<html>bad gateway</html>"),
        (b"", "(no body)"),
    ],
)  # fmt: skip
def test_error_message_reads_both_shapes(raw: bytes, text: str) -> None:
    assert error_message(raw) == text


def test_where_the_gateway_is() -> None:
    assert Gateway.find(None, {}).url == "http://127.0.0.1:3333"
    env = {"MINI_LLM_URL": "http://10.0.0.1:9/", "MINI_LLM_KEY": "k"}
    assert (Gateway.find(None, env).url, Gateway.find(None, env).key) == ("http://10.0.0.1:9", "k")
    assert Gateway.find("http://h:1", env).url == "http://h:1"
    assert Gateway.find(None, {"MINI_LLM_KEY": ""}).key is None
