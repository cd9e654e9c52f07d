"""The default table and every example in config/ load, and route as their comments say."""

from __future__ import annotations

from pathlib import Path

import pytest

from mini_llm.config import load_config
from mini_llm.routing import compile_routes

from ..helpers import REPO

EXAMPLES = sorted((REPO / "config").rglob("*.yaml"))
TABLES = [REPO / "mini-llm.yaml", *EXAMPLES]


def test_the_examples_the_issue_asks_for_exist() -> None:
    names = {p.name for p in EXAMPLES}
    assert names >= {
        "passy.yaml",
        "local-openai-compatible.yaml",
        "azure.yaml",
        "gemini.yaml",
        "fallback.yaml",
    }


@pytest.mark.parametrize("path", TABLES, ids=[str(p.relative_to(REPO)) for p in TABLES])
def test_table_is_valid_without_any_environment(path: Path) -> None:
    config = load_config(path, {})
    # Without keys a provider may be disabled (a warning), never anything else.
    assert all("has no" in w.message for w in config.warnings)
    first = path.read_text(encoding="utf-8").splitlines()[0]
    schema = "schemas/mini-llm.schema.json" if path.parent == REPO else "../../schemas/"
    assert first.startswith("# yaml-language-server: $schema=")
    assert schema in first
    assert (path.parent / first.split("$schema=")[1]).resolve() == (
        REPO / "schemas" / "mini-llm.schema.json"
    )


def test_readme_lists_every_example() -> None:
    readme = (REPO / "config" / "README.md").read_text(encoding="utf-8")
    for path in EXAMPLES:
        assert f"`{path.relative_to(REPO / 'config')}`" in readme


def test_default_table_is_the_spec_table() -> None:
    config = load_config(REPO / "mini-llm.yaml", {"OPENAI_API_KEY": "sk-test-000000000000"})
    assert list(config.providers) == [
        "openai",
        "anthropic",
        "nebius",
        "deepinfra",
        "custom",
        "echo",
    ]
    assert config.server.port == 3333
    assert config.providers["anthropic"].headers == (("anthropic-version", "2023-06-01"),)
    table = compile_routes(config)
    assert str(table.resolve("claude-sonnet").targets[0]) == (
        "anthropic:claude-3-5-sonnet-20241022"
    )
    assert table.resolve("something-else").rule == "default"
    # A fresh gateway answers `demo` with no key at all.
    assert str(table.resolve("demo").targets[0]) == "echo:echo-1"
    assert config.providers["echo"].enabled


def test_passy_is_driven_by_the_environment() -> None:
    env = {
        "PASSY_GATEWAY_PORT": "4317",
        "PASSY_OPENAI_KEYS": "sk-one-000000000000,sk-two-000000000000",
        "PASSY_OPENAI_BASE_URL": "http://127.0.0.1:4002/v1",
        "PASSY_CHAT_MODEL": "gpt-4.1-mini",
        "MINI_LLM_MODEL_ALIASES": '{"passy-cheap": "openai:gpt-4o-mini"}',
    }
    config = load_config(REPO / "config" / "examples" / "passy.yaml", env)
    assert config.server.port == 4317
    assert config.providers["openai"].keys == ("sk-one-000000000000", "sk-two-000000000000")
    assert config.providers["openai"].base_url == "http://127.0.0.1:4002/v1"
    assert not config.providers["anthropic"].enabled
    assert config.providers["byok"].enabled  # passthrough needs no key of its own
    table = compile_routes(config)
    assert str(table.resolve("passy-chat").targets[0]) == "openai:gpt-4.1-mini"
    assert str(table.resolve("passy-cheap").targets[0]) == "openai:gpt-4o-mini"
    assert config.routes.default is None
    defaults = load_config(REPO / "config" / "examples" / "passy.yaml", {})
    assert defaults.server.port == 0


def test_local_example_needs_no_keys() -> None:
    config = load_config(REPO / "config" / "examples" / "local-openai-compatible.yaml", {})
    assert config.warnings == ()
    assert all(p.enabled and p.auth.style == "none" for p in config.providers.values())
    route = compile_routes(config).resolve("ollama:llama3:8b")
    assert str(route.targets[0]) == "ollama:llama3:8b"
    assert config.providers["ollama"].models[0] == "llama3:8b"


def test_azure_example_uses_api_key_header_and_api_version() -> None:
    config = load_config(
        REPO / "config" / "examples" / "azure.yaml",
        {"AZURE_OPENAI_API_KEY": "0123456789abcdef0123", "AZURE_OPENAI_RESOURCE": "acme"},
    )
    table = compile_routes(config)
    upstream = table.upstreams["azure-gpt4o"]
    headers = dict(upstream.headers([], "0123456789abcdef0123"))
    assert headers == {"api-key": "0123456789abcdef0123"}
    assert upstream.url("/chat/completions") == (
        "https://acme.openai.azure.com/openai/deployments/gpt-4o/chat/completions"
        "?api-version=2024-10-21"
    )


def test_gemini_example_puts_the_key_in_the_query() -> None:
    config = load_config(
        REPO / "config" / "examples" / "gemini.yaml", {"GEMINI_API_KEY": "AIza-0123456789abcdef"}
    )
    upstream = compile_routes(config).upstreams["gemini"]
    assert upstream.url("/chat/completions", "", "AIza-0123456789abcdef") == (
        "https://generativelanguage.googleapis.com/v1beta/openai/chat/completions"
        "?key=AIza-0123456789abcdef"
    )
    assert upstream.headers([], "AIza-0123456789abcdef") == []


def test_fallback_example_chains_and_overrides() -> None:
    config = load_config(REPO / "config" / "examples" / "fallback.yaml", {})
    route = compile_routes(config).resolve("llama-70b")
    assert [t.provider for t in route.targets] == ["nebius", "deepinfra", "ollama"]
    assert route.targets[2].model == "llama3:70b"
    assert config.providers["nebius"].retry.attempts == 1
    assert config.providers["nebius"].retry.backoff_s == 0.25  # the rest from defaults
    assert config.providers["deepinfra"].cooldown.rate_limited_s == 10
    assert config.providers["deepinfra"].cooldown.auth_failed_s == 300
