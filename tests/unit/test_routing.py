"""Resolution of a request's model, one row per rule and edge."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mini_llm.routing import ModelNotFound, RoutingTable, compile_routes

from ..helpers import load

TABLE = """\
version: 1
providers:
  openai:
    base_url: https://api.openai.com/v1
    keys: sk-test-0000000000000000
  anthropic:
    base_url: https://api.anthropic.com/v1
    auth: {style: header, header: x-api-key}
    keys: sk-ant-test-000000000000
  ollama:
    base_url: http://127.0.0.1:11434/v1
    auth: none
  nebius:
    base_url: https://api.studio.nebius.ai/v1
    keys: ${NEBIUS_API_KEY:-}
routes:
  aliases:
    gpt-4o: openai:gpt-4o-2024-08-06
    claude-sonnet: anthropic:claude-3-5-sonnet-20241022
    llama: [nebius:meta-llama/Llama-3-70B, ollama:llama3:70b]
    "openai:gpt-4o": ollama:shadowed    # an alias wins over the explicit form
    "claude-custom": openai:gpt-4o-mini  # and over a prefix
  prefixes:
    "claude-": anthropic
    "claude-3-haiku": ollama
    "gpt-": openai
    "o1": openai
  default: {default}
"""


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> RoutingTable:
    path = tmp_path_factory.mktemp("routing")
    return compile_routes(load(path, TABLE.replace("{default}", "ollama")))


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> RoutingTable:
    """The same table without a default."""
    path = tmp_path_factory.mktemp("strict")
    return compile_routes(load(path, TABLE.replace("{default}", "null")))


@pytest.mark.parametrize(
    ("model", "rule", "matched", "targets"),
    [
        # 1. exact alias, renaming the model
        ("gpt-4o", "alias", "gpt-4o", ["openai:gpt-4o-2024-08-06"]),
        ("claude-sonnet", "alias", "claude-sonnet", ["anthropic:claude-3-5-sonnet-20241022"]),
        # 1. an alias to a list: a fallback chain, in order
        (
            "llama",
            "alias",
            "llama",
            ["nebius:meta-llama/Llama-3-70B", "ollama:llama3:70b"],
        ),
        # 1. before every other rule
        ("openai:gpt-4o", "alias", "openai:gpt-4o", ["ollama:shadowed"]),
        ("claude-custom", "alias", "claude-custom", ["openai:gpt-4o-mini"]),
        # 2. explicit provider:model, split at the first colon only
        ("openai:gpt-4o-mini", "explicit", "openai", ["openai:gpt-4o-mini"]),
        ("ollama:llama3:8b", "explicit", "ollama", ["ollama:llama3:8b"]),
        ("ollama:a:b:c", "explicit", "ollama", ["ollama:a:b:c"]),
        ("anthropic:claude-3-opus", "explicit", "anthropic", ["anthropic:claude-3-opus"]),
        # 2. an explicit provider that is disabled still resolves (the proxy answers 503)
        ("nebius:some-model", "explicit", "nebius", ["nebius:some-model"]),
        # 3. longest prefix, model sent unchanged
        ("claude-3-opus", "prefix", "claude-", ["anthropic:claude-3-opus"]),
        ("claude-3-haiku-20240307", "prefix", "claude-3-haiku", ["ollama:claude-3-haiku-20240307"]),
        ("gpt-4o-mini", "prefix", "gpt-", ["openai:gpt-4o-mini"]),
        ("o1-preview", "prefix", "o1", ["openai:o1-preview"]),
        # 2 fails (not a provider, or no model after the colon), so 3 or 4 decides
        ("gpt-4o:latest", "prefix", "gpt-", ["openai:gpt-4o:latest"]),
        ("unknown:model", "default", "ollama", ["ollama:unknown:model"]),
        ("openai:", "default", "ollama", ["ollama:openai:"]),
        ("OpenAI:gpt-4o", "default", "ollama", ["ollama:OpenAI:gpt-4o"]),  # names are exact
        # 4. default, model sent unchanged
        ("mistral-large", "default", "ollama", ["ollama:mistral-large"]),
        ("GPT-4O", "default", "ollama", ["ollama:GPT-4O"]),  # aliases are case-sensitive
        ("", "default", "ollama", ["ollama:"]),
    ],
)
def test_resolve(
    table: RoutingTable, model: str, rule: str, matched: str, targets: list[str]
) -> None:
    route = table.resolve(model)
    assert (route.model, route.rule, route.matched) == (model, rule, matched)
    assert [str(t) for t in route.targets] == targets


@pytest.mark.parametrize(
    ("model", "suggestions"),
    [
        ("gpt4o", ["gpt-4o", "openai:gpt-4o"]),
        ("claud-sonnet", ["claude-sonnet", "claude-custom"]),
        ("lama", ["llama"]),
        ("completely-different-zzz", []),
    ],
)
def test_model_not_found_lists_the_nearest_aliases(
    strict: RoutingTable, model: str, suggestions: list[str]
) -> None:
    with pytest.raises(ModelNotFound) as caught:
        strict.resolve(model)
    assert caught.value.model == model
    assert caught.value.suggestions == suggestions
    if suggestions:
        assert f"did you mean {suggestions[0]!r}" in str(caught.value)
    else:
        assert str(caught.value) == f"model {model!r} is not routed by this gateway"


def test_nearest_aliases_ignore_case(strict: RoutingTable) -> None:
    assert strict.nearest_aliases("GPT-4O")[0] == "gpt-4o"
    assert strict.nearest_aliases("LLAMA") == ["llama"]


def test_without_default_a_known_rule_still_resolves(strict: RoutingTable) -> None:
    assert strict.resolve("gpt-4o").rule == "alias"
    assert strict.resolve("ollama:x").rule == "explicit"
    assert strict.resolve("gpt-5").rule == "prefix"


@pytest.mark.parametrize(
    ("model", "description"),
    [
        ("gpt-4o", "alias `gpt-4o`"),
        ("llama", "fallback chain `llama`"),
        ("ollama:x", "explicit provider `ollama:`"),
        ("claude-x", "prefix `claude-`"),
        ("other", "default provider `ollama`"),
    ],
)
def test_describe(table: RoutingTable, model: str, description: str) -> None:
    assert table.resolve(model).describe() == description


def test_prefixes_are_tried_longest_first(table: RoutingTable) -> None:
    # Declared shortest first in the file; the table sorts them once, at compile time.
    assert table.resolve("claude-3-haiku-x").matched == "claude-3-haiku"
    assert table.resolve("claude-3-opus").matched == "claude-"


def test_routing_table_is_immutable(table: RoutingTable) -> None:
    route = table.resolve("gpt-4o")
    with pytest.raises(dataclasses.FrozenInstanceError):
        route.model = "x"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        table.extra = 1  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        table.config.providers["x"] = table.config.providers["openai"]  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        table.config.server.port = 1  # type: ignore[misc]


def test_table_has_an_upstream_per_provider(table: RoutingTable) -> None:
    assert set(table.upstreams) == {"openai", "anthropic", "ollama", "nebius"}
    assert not table.providers["nebius"].enabled


def test_resolution_without_any_routes(tmp_path: Path) -> None:
    table = compile_routes(load(tmp_path, "version: 1\nproviders:\n  p: {base_url: http://h}\n"))
    assert str(table.resolve("p:m").targets[0]) == "p:m"
    with pytest.raises(ModelNotFound) as caught:
        table.resolve("m")
    assert caught.value.suggestions == []
