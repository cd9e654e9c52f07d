"""Upstream errors in the client's shape, and the endpoints and headers of translation."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mini_llm.translate import (
    ANTHROPIC_VERSION,
    content_type,
    is_translatable,
    needs_translation,
    path_format,
    request_headers,
    translate_error,
    translated_path,
)

ANTHROPIC_ERROR = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
OPENAI_ERROR = json.dumps(
    {
        "error": {
            "message": "Rate limit reached for gpt-4o",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
).encode()


def test_an_anthropic_error_for_an_openai_client() -> None:
    out = json.loads(translate_error(529, ANTHROPIC_ERROR, to="openai"))
    assert out == {
        "error": {
            "message": "Overloaded",
            "type": "server_error",
            "param": None,
            "code": "overloaded_error",
        }
    }


def test_an_openai_error_for_an_anthropic_client() -> None:
    out = json.loads(translate_error(429, OPENAI_ERROR, to="anthropic"))
    assert out == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "Rate limit reached for gpt-4o"},
    }


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (402, "billing_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (409, "invalid_request_error"),
        (413, "request_too_large"),
        (422, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "api_error"),
        (504, "timeout_error"),
        (529, "overloaded_error"),
    ],
)
def test_anthropic_error_types_follow_the_status(status: int, kind: str) -> None:
    out = json.loads(translate_error(status, OPENAI_ERROR, to="anthropic"))
    assert out["error"]["type"] == kind


@pytest.mark.parametrize(
    ("anthropic_type", "status", "openai_type"),
    [
        ("invalid_request_error", 400, "invalid_request_error"),
        ("authentication_error", 401, "authentication_error"),
        ("permission_error", 403, "permission_error"),
        ("not_found_error", 404, "not_found_error"),
        ("request_too_large", 413, "invalid_request_error"),
        ("rate_limit_error", 429, "rate_limit_error"),
        ("billing_error", 402, "insufficient_quota"),
        ("api_error", 500, "server_error"),
        ("something_new", 418, "invalid_request_error"),
        ("something_new", 500, "server_error"),
    ],
)
def test_openai_error_types_follow_the_anthropic_type(
    anthropic_type: str, status: int, openai_type: str
) -> None:
    body = json.dumps({"type": "error", "error": {"type": anthropic_type, "message": "m"}})
    out = json.loads(translate_error(status, body.encode(), to="openai"))
    assert out["error"]["type"] == openai_type
    assert out["error"]["code"] == anthropic_type


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html><body>502 Bad Gateway</body></html>", "<html><body>502 Bad Gateway</body></html>"),
        (b"", "the provider answered HTTP 502"),
        (b"   ", "the provider answered HTTP 502"),
        (b"\xff\xfe not utf-8", "\ufffd\ufffd not utf-8"),
        (b'{"detail": "Not Found"}', "Not Found"),
        (b'{"error": "plain string"}', "plain string"),
        (b'{"message": "top level"}', "top level"),
        (b"[1, 2]", "the provider answered HTTP 502"),
        (b'{"error": {"code": 5}}', "the provider answered HTTP 502"),
    ],
)
@pytest.mark.parametrize("to", ["openai", "anthropic"])
def test_any_body_gives_a_well_formed_error(body: bytes, message: str, to: Any) -> None:
    out = json.loads(translate_error(502, body, to=to))
    error = out["error"]
    assert error["message"] == message
    if to == "anthropic":
        assert out["type"] == "error" and error["type"] == "api_error"
    else:
        assert error["type"] == "server_error"


def test_a_long_body_is_cut() -> None:
    out = json.loads(translate_error(500, b"x" * 5000, to="openai"))
    assert len(out["error"]["message"]) == 1000


# Endpoints ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "fmt"),
    [
        ("/v1/messages", "anthropic"),
        ("/v1/messages/count_tokens", "anthropic"),
        ("/v1/chat/completions", "openai"),
        ("/v1/embeddings", "openai"),
        ("/v1/messagesx", "openai"),
        ("/messages", "anthropic"),
    ],
)
def test_the_format_a_path_speaks(path: str, fmt: str) -> None:
    assert path_format(path) == fmt


@pytest.mark.parametrize(
    ("path", "to", "upstream"),
    [
        ("/v1/chat/completions", "anthropic", "/v1/messages"),
        ("/chat/completions", "anthropic", "/messages"),
        ("/v1/messages", "openai", "/v1/chat/completions"),
        ("/messages", "openai", "/chat/completions"),
        ("/v1/chat/completions", "openai", "/v1/chat/completions"),
        ("/v1/messages", "anthropic", "/v1/messages"),
        ("/v1/embeddings", "openai", "/v1/embeddings"),
        ("/v1/embeddings", "anthropic", None),
        ("/v1/completions", "anthropic", None),
        ("/v1/responses", "anthropic", None),
        ("/v1/messages/count_tokens", "openai", None),
        ("/v1/messages/batches", "openai", None),
    ],
)
def test_translated_paths(path: str, to: Any, upstream: str | None) -> None:
    assert translated_path(path, to=to) == upstream
    assert is_translatable(path, to=to) == (upstream is not None)


def test_needs_translation() -> None:
    assert needs_translation("/v1/chat/completions", "anthropic")
    assert needs_translation("/v1/messages", "openai")
    assert not needs_translation("/v1/messages", "anthropic")
    assert not needs_translation("/v1/messages", None)
    assert not needs_translation("/v1/embeddings", None)


def test_request_headers_for_each_format() -> None:
    to_anthropic = request_headers("anthropic")
    assert to_anthropic.default == {"anthropic-version": ANTHROPIC_VERSION}
    assert to_anthropic.replace == {"accept-encoding": "identity"}
    assert "openai-organization" in to_anthropic.remove
    to_openai = request_headers("openai")
    assert to_openai.replace == {"accept-encoding": "identity"}
    assert {"anthropic-version", "anthropic-beta"} <= to_openai.remove
    assert content_type(True).startswith("text/event-stream")
    assert content_type(False) == "application/json"
