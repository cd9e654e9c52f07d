"""The per-target translation the proxy builds: body, path, headers, and its 400s."""

from __future__ import annotations

import json

import pytest

from mini_llm.config import Auth, Provider
from mini_llm.errors import ProxyError
from mini_llm.translate import Format
from mini_llm.translation import translation_for

HI = [{"role": "user", "content": "hi"}]


def provider(
    fmt: Format, drop_unsupported: bool = False, default_max_tokens: int = 4096
) -> Provider:
    return Provider(
        "p",
        "http://up/v1",
        Auth(),
        ("k",),
        format=fmt,
        drop_unsupported=drop_unsupported,
        default_max_tokens=default_max_tokens,
    )


def test_a_chat_request_for_an_anthropic_provider() -> None:
    doc = {
        "model": "alias",
        "messages": HI,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    translation = translation_for("/v1/chat/completions", doc, provider("anthropic"), "up")
    assert (translation.client, translation.provider, translation.tail) == (
        "openai",
        "anthropic",
        "/messages",
    )
    body = json.loads(translation.body)
    assert body["model"] == "up"
    assert body["max_tokens"] == 4096
    assert translation.client_model == "alias"
    assert translation.dropped == ()
    assert doc["model"] == "alias"  # the client's request is left as it came


def test_headers_follow_the_providers_format() -> None:
    translation = translation_for(
        "/v1/chat/completions", {"model": "m", "messages": HI}, provider("anthropic"), "m"
    )
    headers = translation.headers(
        [("Accept-Encoding", "gzip"), ("OpenAI-Organization", "org"), ("x-api-key", "k")]
    )
    assert headers == [
        ("x-api-key", "k"),
        ("accept-encoding", "identity"),
        ("anthropic-version", "2023-06-01"),
    ]
    # A version the client or the provider set is kept.
    kept = translation.headers([("anthropic-version", "2024-01-01")])
    assert ("anthropic-version", "2024-01-01") in kept
    assert [n for n, _ in kept].count("anthropic-version") == 1


def test_a_messages_request_for_an_openai_provider_drops_anthropic_headers() -> None:
    doc = {"model": "m", "max_tokens": 5, "messages": HI}
    translation = translation_for("/v1/messages", doc, provider("openai"), "gpt")
    assert translation.tail == "/chat/completions"
    assert json.loads(translation.body)["model"] == "gpt"
    assert translation.headers([("anthropic-version", "2023-06-01"), ("anthropic-beta", "x")]) == [
        ("accept-encoding", "identity")
    ]


def test_an_endpoint_without_a_counterpart_is_refused() -> None:
    with pytest.raises(ProxyError) as caught:
        translation_for("/v1/embeddings", {"model": "m"}, provider("anthropic"), "m")
    assert (caught.value.status, caught.value.code) == (400, "unsupported_for_provider")
    assert not caught.value.retryable


def test_a_field_that_cannot_be_carried_is_refused_or_dropped() -> None:
    doc = {"model": "m", "messages": HI, "n": 2}
    with pytest.raises(ProxyError) as caught:
        translation_for("/v1/chat/completions", doc, provider("anthropic"), "m")
    assert (caught.value.status, caught.value.code) == (400, "unsupported_parameter")
    assert "`n`" in caught.value.message
    lax = provider("anthropic", drop_unsupported=True, default_max_tokens=9)
    translation = translation_for("/v1/chat/completions", doc, lax, "m")
    assert translation.dropped == ("n",)
    assert json.loads(translation.body)["max_tokens"] == 9
