"""Per-provider request shaping: upstream URL, headers, credentials, and their masked display."""

from __future__ import annotations

import json

import pytest

from mini_llm.masking import mask
from mini_llm.routing import RoutingTable, compile_routes
from mini_llm.upstream import splice_model

from ..helpers import load

KEY = "sk-live-SECRET-0123456789abcd"
GEMINI_KEY = "AIzaSy-SECRET-9876543210wxyz"

TABLE = f"""\
version: 1
providers:
  openai:
    base_url: https://api.openai.com/v1/
    keys: {KEY}
    headers: {{OpenAI-Beta: assistants=v2, User-Agent: null, authorization: null}}
  anthropic:
    base_url: https://api.anthropic.com/v1
    auth: {{style: header, header: x-api-key}}
    keys: {KEY}
    headers: {{anthropic-version: "2023-06-01"}}
  custom-header:
    base_url: https://example.com/api
    auth: {{style: header, header: Authorization, prefix: "Token "}}
    keys: {KEY}
  gemini:
    base_url: https://generativelanguage.googleapis.com/v1beta/openai
    auth: {{style: query, param: key}}
    keys: {GEMINI_KEY}
  signed:
    base_url: https://example.com/v1?tenant=acme&token={KEY}
    auth: {{style: query, param: sig}}
    keys: {GEMINI_KEY}
  azure:
    base_url: https://r.openai.azure.com/openai/deployments/gpt-4o
    auth: {{style: header, header: api-key}}
    keys: {KEY}
    query: {{api-version: "2024-10-21"}}
  local:
    base_url: http://127.0.0.1:11434/v1
    auth: none
  byok:
    base_url: https://api.openai.com/v1
    auth: passthrough
"""

CLIENT = [
    ("Host", "127.0.0.1:3333"),
    ("Content-Length", "12"),
    ("Connection", "keep-alive, X-Hop"),
    ("X-Hop", "dropped because Connection names it"),
    ("Transfer-Encoding", "chunked"),
    ("Authorization", "Bearer client-key"),
    ("x-api-key", "client-key"),
    ("api-key", "client-key"),
    ("User-Agent", "OpenAI/Python"),
    ("Accept-Encoding", "gzip"),
    ("OpenAI-Beta", "client-value"),
    ("X-Custom", "kept"),
]


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> RoutingTable:
    return compile_routes(load(tmp_path_factory.mktemp("upstream"), TABLE))


@pytest.mark.parametrize(
    ("provider", "tail", "client_query", "url"),
    [
        ("openai", "/chat/completions", "", "https://api.openai.com/v1/chat/completions"),
        (
            "openai",
            "/models",
            "limit=5&after=x",
            "https://api.openai.com/v1/models?limit=5&after=x",
        ),
        ("anthropic", "/messages", "beta=true", "https://api.anthropic.com/v1/messages?beta=true"),
        (
            "azure",
            "/chat/completions",
            "api-version=old&x=1",
            "https://r.openai.azure.com/openai/deployments/gpt-4o/chat/completions"
            "?x=1&api-version=2024-10-21",
        ),
        (
            "gemini",
            "/chat/completions",
            "key=client",
            "https://generativelanguage.googleapis.com/v1beta/openai/chat/completions"
            f"?key={GEMINI_KEY}",
        ),
    ],
)
def test_url(table: RoutingTable, provider: str, tail: str, client_query: str, url: str) -> None:
    keys = table.providers[provider].keys
    assert table.upstreams[provider].url(tail, client_query, keys[0] if keys else None) == url


def header_names(headers: list[tuple[str, str]]) -> list[str]:
    return [name for name, _ in headers]


def test_headers_for_bearer(table: RoutingTable) -> None:
    headers = table.upstreams["openai"].headers(CLIENT, KEY)
    assert headers == [
        ("Accept-Encoding", "gzip"),
        ("X-Custom", "kept"),
        ("OpenAI-Beta", "assistants=v2"),  # the provider's value replaces the client's
        ("Authorization", f"Bearer {KEY}"),
    ]  # User-Agent: null removed it


def test_headers_for_header_auth(table: RoutingTable) -> None:
    headers = dict(table.upstreams["anthropic"].headers(CLIENT, KEY))
    assert headers["x-api-key"] == KEY
    assert headers["anthropic-version"] == "2023-06-01"
    assert "Authorization" not in headers and "api-key" not in headers
    custom = dict(table.upstreams["custom-header"].headers(CLIENT, KEY))
    assert custom["Authorization"] == f"Token {KEY}"


def test_headers_without_key_style(table: RoutingTable) -> None:
    for name in ("local", "gemini"):
        headers = header_names(table.upstreams[name].headers(CLIENT, None))
        assert not {"Authorization", "x-api-key", "api-key"} & set(headers)


def test_passthrough_keeps_the_clients_credentials(table: RoutingTable) -> None:
    headers = dict(table.upstreams["byok"].headers(CLIENT, None))
    assert headers["Authorization"] == "Bearer client-key"
    assert headers["x-api-key"] == "client-key"
    assert "Host" not in headers and "Content-Length" not in headers


@pytest.mark.parametrize("provider", ["openai", "anthropic", "local", "byok"])
def test_hop_by_hop_host_and_length_are_always_dropped(table: RoutingTable, provider: str) -> None:
    names = {n.lower() for n in header_names(table.upstreams[provider].headers(CLIENT, KEY))}
    assert not names & {"host", "content-length", "connection", "transfer-encoding", "x-hop"}


def test_base_url_trailing_slash_is_ignored(table: RoutingTable) -> None:
    assert table.providers["openai"].base_url == "https://api.openai.com/v1"


# What `route` shows: never a whole key ----------------------------------------------------------


@pytest.mark.parametrize("provider", ["openai", "anthropic", "custom-header", "azure"])
def test_shown_headers_mask_the_key(table: RoutingTable, provider: str) -> None:
    shown = table.upstreams[provider].shown_headers(KEY)
    assert KEY not in repr(shown)
    assert mask(KEY) in repr(shown)


@pytest.mark.parametrize(
    ("provider", "url"),
    [
        (
            "gemini",
            "https://generativelanguage.googleapis.com/v1beta/openai/chat/completions?key=AIz…wxyz",
        ),
        # A parameter named neither key nor token: masked because auth puts the key there.
        (
            "signed",
            "https://example.com/v1/chat/completions?tenant=acme&token=sk-…abcd&sig=AIz…wxyz",
        ),
        (
            "azure",
            "https://r.openai.azure.com/openai/deployments/gpt-4o/chat/completions"
            "?api-version=2024-10-21",
        ),
    ],
)
def test_shown_url_masks_the_key(table: RoutingTable, provider: str, url: str) -> None:
    keys = table.providers[provider].keys
    assert table.upstreams[provider].shown_url("/chat/completions", keys[0]) == url


def test_shown_url_without_a_key(table: RoutingTable) -> None:
    shown = table.upstreams["gemini"].shown_url("/chat/completions", None)
    assert shown.endswith("?key=<no key>")


@pytest.mark.parametrize(
    ("secret", "shown"),
    [
        ("sk-proj-abcdefghijklmnop1234", "sk-…1234"),
        ("0123456789abcdef", "012…cdef"),
        ("short-key-12", "…12"),
        ("tiny", "…"),
        ("", "…"),
    ],
)
def test_mask(secret: str, shown: str) -> None:
    assert mask(secret) == shown


def test_provider_repr_masks_keys(table: RoutingTable) -> None:
    assert KEY not in repr(table.providers["openai"])
    assert KEY not in repr(table.config)


# Splicing the upstream model into the client's bytes -------------------------------------------

SPLICES = [
    (b'{"model":"fast","messages":[]}', b'{"model":"up/model:1","messages":[]}'),
    (
        b'{ "messages": [], "model" :\n "fast" , "n": 1}',
        b'{ "messages": [], "model" :\n "up/model:1" , "n": 1}',
    ),
    (
        '{"model": "fast", "content": "café ✓"}'.encode(),
        '{"model": "up/model:1", "content": "café ✓"}'.encode(),
    ),
]


@pytest.mark.parametrize(("body", "expected"), SPLICES)
def test_splice_replaces_only_the_models_value(body: bytes, expected: bytes) -> None:
    spliced = splice_model(body, "fast", "up/model:1")
    assert spliced == expected
    assert json.loads(spliced) == json.loads(body) | {"model": "up/model:1"}


@pytest.mark.parametrize(
    "body",
    [
        b'{"model": "fast", "contents": [{"role": "model"}]}',  # "model" twice
        b'{"mod\\u0065l": "fast", "x": {"model": "fast"}}',  # an escaped key
        b'{"model": "fast", "t": "\\u00e9"}',  # any \\u: unsure
        b'{"model": "f\\u0061st"}',
        b'{"model": "fas\\/t"}',  # not the plain encoding of the name
        b'{"x": "say \\"model", "model": "fast"}',
    ],
)
def test_splice_declines_when_unsure(body: bytes) -> None:
    assert splice_model(body, "fast", "up") is None
