"""MINI_LLM_* overrides: each variable, precedence, and malformed values."""

from __future__ import annotations

from pathlib import Path

import pytest

from mini_llm.config import Config

from ..helpers import load, problems, where

TABLE = """\
version: 1
server:
  host: 127.0.0.1
  port: 3333
providers:
  openai:
    base_url: https://api.openai.com/v1
    keys: sk-test-0000000000000000
routes:
  aliases:
    gpt-4o: openai:gpt-4o
"""


def configured(tmp_path: Path, **env: str) -> Config:
    return load(tmp_path, TABLE, env)


# The named variables -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "field", "value"),
    [
        ("MINI_LLM_HOST", "0.0.0.0", "host", "0.0.0.0"),
        ("MINI_LLM_HOST", " ::1 ", "host", "::1"),
        ("MINI_LLM_PORT", "4000", "port", 4000),
        ("MINI_LLM_PORT", "0", "port", 0),
        ("MINI_LLM_PORT_RETRIES", "0", "port_retries", 0),
        ("MINI_LLM_PORT_RETRIES", "25", "port_retries", 25),
        ("MINI_LLM_LOG_REQUESTS", "1", "log_requests", True),
        ("MINI_LLM_LOG_REQUESTS", "TRUE", "log_requests", True),
        ("MINI_LLM_LOG_REQUESTS", "yes", "log_requests", True),
        ("MINI_LLM_LOG_REQUESTS", "off", "log_requests", False),
        ("MINI_LLM_LOG_REQUESTS", "0", "log_requests", False),
    ],
)
def test_named_variable(tmp_path: Path, name: str, text: str, field: str, value: object) -> None:
    config = configured(tmp_path, **{name: text})
    assert getattr(config.server, field) == value
    assert config.environment[f"/server/{field}"] == (name,)


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("MINI_LLM_PORT", "eighty", "is not a port number 0-65535"),
        ("MINI_LLM_PORT", "70000", "is not a port number 0-65535"),
        ("MINI_LLM_PORT", "-1", "is not a port number 0-65535"),
        ("MINI_LLM_PORT", "1_000", "is not a port number 0-65535"),
        ("MINI_LLM_PORT", "80.5", "is not a port number 0-65535"),
        ("MINI_LLM_PORT", "", "is not a port number 0-65535"),
        ("MINI_LLM_PORT_RETRIES", "many", "is not a whole number >= 0"),
        ("MINI_LLM_PORT_RETRIES", "-3", "is not a whole number >= 0"),
        ("MINI_LLM_LOG_REQUESTS", "maybe", "is not true/false, 1/0, yes/no, on/off"),
        ("MINI_LLM_HOST", "  ", "is not a host name or address"),
    ],
)
def test_malformed_named_variable(tmp_path: Path, name: str, text: str, expected: str) -> None:
    [problem] = problems(tmp_path, TABLE, {name: text})
    assert problem.message == f"{name}={text!r} {expected}"
    assert problem.level == "error"


def test_malformed_named_variable_points_at_the_value_it_replaces(tmp_path: Path) -> None:
    [problem] = problems(tmp_path, TABLE, {"MINI_LLM_PORT": "x"})
    assert (problem.line, problem.col, problem.pointer) == (4, 9, "/server/port")


def test_all_malformed_variables_are_reported_together(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        TABLE,
        {"MINI_LLM_PORT": "x", "MINI_LLM_LOG_REQUESTS": "maybe", "MINI_LLM_MODEL_ALIASES": "["},
    )
    assert sorted(p.message.split("=")[0].split(" ")[0] for p in found) == [
        "MINI_LLM_LOG_REQUESTS",
        "MINI_LLM_MODEL_ALIASES",
        "MINI_LLM_PORT",
    ]


# MINI_LLM__A__B ----------------------------------------------------------------------------------


def test_path_override_sets_a_nested_value(tmp_path: Path) -> None:
    config = configured(tmp_path, MINI_LLM__PROVIDERS__OPENAI__BASE_URL="http://127.0.0.1:4002/v1")
    assert config.providers["openai"].base_url == "http://127.0.0.1:4002/v1"
    assert config.environment["/providers/openai/base_url"] == (
        "MINI_LLM__PROVIDERS__OPENAI__BASE_URL",
    )


def test_path_override_values_are_yaml_scalars(tmp_path: Path) -> None:
    config = configured(
        tmp_path,
        MINI_LLM__SERVER__PORT="4001",
        MINI_LLM__SERVER__RELOAD="false",
        MINI_LLM__SERVER__SHUTDOWN_GRACE_S="2.5",
    )
    assert (config.server.port, config.server.reload) == (4001, False)
    assert config.server.shutdown_grace_s == 2.5


def test_path_override_flow_collections(tmp_path: Path) -> None:
    config = configured(
        tmp_path,
        MINI_LLM__PROVIDERS__OPENAI__KEYS="[sk-one-0000000000, sk-two-0000000000]",
        MINI_LLM__ROUTES__PREFIXES='{"gpt-": openai, "o1": openai}',
        MINI_LLM__PROVIDERS__OPENAI__HEADERS="{OpenAI-Organization: org-1, x-drop: null}",
    )
    assert config.providers["openai"].keys == ("sk-one-0000000000", "sk-two-0000000000")
    assert dict(config.routes.prefixes) == {"gpt-": "openai", "o1": "openai"}
    assert config.providers["openai"].headers == (
        ("OpenAI-Organization", "org-1"),
        ("x-drop", None),
    )


def test_path_override_segments_are_lower_cased(tmp_path: Path) -> None:
    config = configured(tmp_path, MINI_LLM__Server__Port="4002")
    assert config.server.port == 4002


def test_path_override_creates_a_new_provider(tmp_path: Path) -> None:
    config = configured(
        tmp_path,
        MINI_LLM__PROVIDERS__LOCAL='{base_url: "http://127.0.0.1:11434/v1", auth: none}',
        MINI_LLM__PROVIDERS__SPARE__BASE_URL="http://127.0.0.1:8000/v1",
    )
    assert config.providers["local"].enabled
    assert config.providers["local"].auth.style == "none"
    # Created from one field: bearer auth by default, so without keys it is disabled.
    spare = config.providers["spare"]
    assert (spare.base_url, spare.enabled) == ("http://127.0.0.1:8000/v1", False)
    [warning] = config.warnings
    assert "provider `spare` has no keys" in warning.message


def test_empty_path_override_empties_the_value(tmp_path: Path) -> None:
    config = configured(tmp_path, MINI_LLM__PROVIDERS__OPENAI__KEYS="")
    assert config.providers["openai"].disabled_reason == (
        "provider `openai` has no keys (set MINI_LLM__PROVIDERS__OPENAI__KEYS)"
    )


def test_text_fields_stay_text(tmp_path: Path) -> None:
    env = {
        "MINI_LLM__PROVIDERS__OPENAI__KEYS": "12345678901234567890",
        # A date to YAML; `-` is allowed in a variable name, if not by every shell.
        "MINI_LLM__PROVIDERS__OPENAI__QUERY__API-VERSION": "2024-10-21",
        "MINI_LLM__ROUTES__ALIASES__CHAT": "openai:4",
    }
    config = configured(tmp_path, **env)
    assert config.providers["openai"].keys == ("12345678901234567890",)
    assert config.providers["openai"].query == (("api-version", "2024-10-21"),)
    assert [t.model for t in config.routes.aliases["chat"]] == ["4"]


def test_path_override_replaces_a_file_value_whose_variable_is_unset(tmp_path: Path) -> None:
    text = TABLE.replace("port: 3333", "port: ${GATEWAY_PORT}")
    assert "GATEWAY_PORT" in problems(tmp_path, text)[0].message
    assert load(tmp_path, text, {"MINI_LLM_PORT": "4000"}).server.port == 4000
    assert load(tmp_path, text, {"MINI_LLM__SERVER": "{port: 4001}"}).server.port == 4001


@pytest.mark.parametrize(
    ("env", "fragment", "pointer"),
    [
        (
            {"MINI_LLM__SERVER__PORT": "[1, 2"},
            "MINI_LLM__SERVER__PORT is not a valid value: expected ',' or ']'",
            "/server/port",
        ),
        (
            {"MINI_LLM__SERVER__PORT": "abc"},
            "expected an integer, got a string (set by MINI_LLM__SERVER__PORT)",
            "/server/port",
        ),
        (
            {"MINI_LLM__SERVER__PROT": "1"},
            "unknown key `prot`; did you mean `port`? (set by MINI_LLM__SERVER__PROT)",
            "/server/prot",
        ),
        (
            {"MINI_LLM__SERVER__PORT__X": "1"},
            "MINI_LLM__SERVER__PORT__X sets a key inside a value that is not a mapping",
            "/server/port",
        ),
        (
            {"MINI_LLM__SERVER____PORT": "1"},
            "MINI_LLM__SERVER____PORT: empty path segment",
            "/",
        ),
        (
            {"MINI_LLM__PROVIDERS__OPENAI__AUTH": "token"},
            "`token` is not one of: bearer, none, passthrough (set by "
            "MINI_LLM__PROVIDERS__OPENAI__AUTH)",
            "/providers/openai/auth",
        ),
    ],
)
def test_malformed_path_override_names_the_variable(
    tmp_path: Path, env: dict[str, str], fragment: str, pointer: str
) -> None:
    [problem] = problems(tmp_path, TABLE, env)
    assert fragment in problem.message
    assert problem.pointer == pointer


# MINI_LLM_MODEL_ALIASES --------------------------------------------------------------------------


def test_model_aliases_merge_over_the_file(tmp_path: Path) -> None:
    config = configured(
        tmp_path,
        MINI_LLM_MODEL_ALIASES='{"chat": "openai:gpt-4o-mini", "gpt-4o": ["openai:gpt-4o",'
        ' "openai:gpt-4o-2024-08-06"]}',
    )
    aliases = {a: [str(t) for t in ts] for a, ts in config.routes.aliases.items()}
    assert aliases == {
        "gpt-4o": ["openai:gpt-4o", "openai:gpt-4o-2024-08-06"],
        "chat": ["openai:gpt-4o-mini"],
    }
    assert config.environment["/routes/aliases/chat"] == ("MINI_LLM_MODEL_ALIASES",)
    assert "/routes/aliases" not in config.environment  # only the aliases it set


def test_model_aliases_without_routes_in_the_file(tmp_path: Path) -> None:
    text = TABLE.split("routes:")[0]
    config = load(tmp_path, text, {"MINI_LLM_MODEL_ALIASES": '{"chat": "openai:gpt-4o"}'})
    assert list(config.routes.aliases) == ["chat"]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("{chat: openai:gpt-4o}", "MINI_LLM_MODEL_ALIASES is not valid JSON"),
        ('["openai:gpt-4o"]', "MINI_LLM_MODEL_ALIASES must be a JSON object"),
        ('{"chat": "gpt-4o"}', "`gpt-4o` must be `provider:model`"),
        ('{"chat": 5}', "expected a string or a list or a mapping, got an integer"),
        ('{"chat": "opena:gpt-4o"}', "did you mean `openai`?"),
    ],
)
def test_malformed_model_aliases(tmp_path: Path, text: str, fragment: str) -> None:
    [problem] = problems(tmp_path, TABLE, {"MINI_LLM_MODEL_ALIASES": text})
    assert fragment in problem.message
    assert "MINI_LLM_MODEL_ALIASES" in problem.message


# Precedence --------------------------------------------------------------------------------------


def test_precedence_path_over_named_over_file(tmp_path: Path) -> None:
    assert configured(tmp_path).server.port == 3333
    assert configured(tmp_path, MINI_LLM_PORT="4000").server.port == 4000
    config = configured(tmp_path, MINI_LLM_PORT="4000", MINI_LLM__SERVER__PORT="4001")
    assert config.server.port == 4001
    assert config.environment["/server/port"] == ("MINI_LLM__SERVER__PORT",)


def test_path_override_beats_model_aliases(tmp_path: Path) -> None:
    config = configured(
        tmp_path,
        MINI_LLM_MODEL_ALIASES='{"chat": "openai:from-aliases"}',
        MINI_LLM__ROUTES__ALIASES__CHAT="openai:from-path",
    )
    assert [t.model for t in config.routes.aliases["chat"]] == ["from-path"]


def test_more_specific_path_override_wins(tmp_path: Path) -> None:
    config = configured(
        tmp_path, MINI_LLM__SERVER="{port: 5000, host: 0.0.0.0}", MINI_LLM__SERVER__PORT="5001"
    )
    assert (config.server.host, config.server.port) == ("0.0.0.0", 5001)
    assert config.environment["/server"] == ("MINI_LLM__SERVER",)
    assert config.environment["/server/port"] == ("MINI_LLM__SERVER__PORT",)


def test_built_in_defaults_apply_last(tmp_path: Path) -> None:
    config = load(tmp_path, "version: 1\n")
    assert (config.server.host, config.server.port, config.server.port_retries) == (
        "127.0.0.1",
        3333,
        10,
    )
    assert config.server.log_requests is False


# Unknown variables ------------------------------------------------------------------------------


def test_unknown_mini_llm_variable_is_a_warning_with_a_suggestion(tmp_path: Path) -> None:
    config = configured(tmp_path, MINI_LLM_PROT="4000", MINI_LLM_CONFIG="x.yaml")
    assert where(list(config.warnings)) == [
        (1, 1, "unknown variable `MINI_LLM_PROT` is ignored; did you mean `MINI_LLM_PORT`?")
    ]
    assert config.server.port == 3333


def test_other_variables_are_not_read(tmp_path: Path) -> None:
    config = configured(tmp_path, PORT="1", HOST="h", MINI_LLMPORT="2")
    assert config.server.port == 3333
    assert config.warnings == ()
