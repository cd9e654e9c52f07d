"""The JSON Schema: itself valid, in step with the dataclasses, and its problems well located."""

from __future__ import annotations

import dataclasses
import json
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from mini_llm import config as cfg
from mini_llm.schema import schema_path, validate
from mini_llm.source import parse_document

from ..helpers import REPO, load


def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(schema_path().read_text(encoding="utf-8"))
    return loaded


def check(text: str) -> list[tuple[int, int, str, str]]:
    doc = parse_document(textwrap.dedent(text), "t.yaml", {})
    assert doc.problems == []
    return sorted((p.line, p.col, p.message, p.pointer) for p in validate(doc))


# The schema file ---------------------------------------------------------------------------------


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(schema())


def test_schema_used_from_a_checkout_is_the_repository_file() -> None:
    assert schema_path().read_bytes() == (REPO / "schemas" / "mini-llm.schema.json").read_bytes()


def test_every_property_has_a_description() -> None:
    missing: list[str] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for name, sub in node.get("properties", {}).items():
                if "description" not in sub and "$ref" not in sub:
                    missing.append(f"{where}/{name}")
            for key, sub in node.items():
                if key != "if":  # a condition's properties are not settings
                    walk(sub, f"{where}/{key}")
        elif isinstance(node, list):
            for i, sub in enumerate(node):
                walk(sub, f"{where}/{i}")

    walk(schema(), "")
    assert missing == []


@pytest.mark.parametrize(
    ("section", "cls"),
    [
        (("properties", "server"), cfg.Server),
        (("$defs", "timeouts"), cfg.Timeouts),
        (("$defs", "pool"), cfg.Pool),
        (("$defs", "retry"), cfg.Retry),
        (("$defs", "cooldown"), cfg.Cooldown),
    ],
)
def test_sections_match_the_settings_dataclasses(section: tuple[str, str], cls: type) -> None:
    node = schema()[section[0]][section[1]]
    assert set(node["properties"]) == {f.name for f in dataclasses.fields(cls)}


def test_defaults_section_covers_every_overridable_setting() -> None:
    s = schema()
    assert set(s["properties"]["defaults"]["properties"]) == {
        "timeouts",
        "pool",
        "retry",
        "cooldown",
        "health",
    }
    provider = set(s["$defs"]["provider"]["properties"])
    assert provider >= {"timeouts", "pool", "retry", "cooldown", "health"}


# Problems -------------------------------------------------------------------------------------


def test_valid_table_has_no_problems() -> None:
    assert check((REPO / "mini-llm.yaml").read_text()) == []


def test_unknown_key_is_located_at_the_key_with_a_suggestion() -> None:
    assert check(
        """\
        version: 1
        server:
          prot: 1
          max_body: 5
          totally_unrelated: 1
        """
    ) == [
        (3, 3, "unknown key `prot`; did you mean `port`?", "/server/prot"),
        (4, 3, "unknown key `max_body`; did you mean `max_body_bytes`?", "/server/max_body"),
        (5, 3, "unknown key `totally_unrelated`", "/server/totally_unrelated"),
    ]


def test_suggestions_ignore_case() -> None:
    [(_, _, message, _)] = check("version: 1\nProviders: {}\n")
    assert message == "unknown key `Providers`; did you mean `providers`?"


def test_missing_required_key_is_located_at_the_parent_key() -> None:
    assert check(
        """\
        version: 1
        providers:
          openai:
            auth: bearer
        """
    ) == [(3, 3, "missing required key `base_url`", "/providers/openai")]


def test_missing_version() -> None:
    assert check("# comment\nproviders: {}\n") == [(2, 1, "missing required key `version`", "/")]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2", "must be 1"),
        ('"1"', "must be 1"),
        ("1.5", "must be 1"),
    ],
)
def test_wrong_version(value: str, message: str) -> None:
    assert check(f"version: {value}\n") == [(1, 10, message, "/version")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("server: {port: x}", "expected an integer, got a string"),
        ("server: {port: 1.5}", "expected an integer, got a number"),
        ("server: {port: true}", "expected an integer, got true/false"),
        ("server: {host: 8080}", "expected a string, got an integer (put it in quotes"),
        ("server: {log_requests: yes please}", "expected true/false, got a string"),
        ("server: [1]", "expected a mapping, got a list"),
        ("routes: {default: [a]}", "expected a string or null, got a list"),
        ("providers: {p: {base_url: x, models: [1]}}", "expected a string, got an integer"),
    ],
)
def test_wrong_type(text: str, message: str) -> None:
    [(_, _, found, _)] = check(f"version: 1\n{text}\n")
    assert found.startswith(message)


def test_wrong_type_is_located_at_the_value() -> None:
    assert check("version: 1\nserver:\n  port:   nope\n") == [
        (3, 11, "expected an integer, got a string", "/server/port")
    ]


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        ("bearr", "`bearr` is not one of: bearer, none, passthrough; did you mean `bearer`?"),
        ("Bearer", "`Bearer` is not one of: bearer, none, passthrough; did you mean `bearer`?"),
        (
            "query",
            "`query` is not one of: bearer, none, passthrough;"
            " write `auth: {style: query, param: NAME}`",
        ),
        ("{style: basic}", "`basic` is not one of: bearer, header, query, none, passthrough"),
        ("{style: header}", "missing required key `header`"),
        ("{style: query, header: x}", "missing required key `param`"),
        ("{style: bearer, token: x}", "unknown key `token`"),
        ("[bearer]", "expected a string or a mapping, got a list"),
    ],
)
def test_auth_problems(auth: str, message: str) -> None:
    [(_, _, found, _)] = check(f"version: 1\nproviders:\n  p:\n    base_url: x\n    auth: {auth}\n")
    assert found == message


def test_secret_values_are_never_echoed() -> None:
    found = check(
        """\
        version: 1
        providers:
          p:
            base_url: x
            keys: {sk-live-SECRET: 1}
            headers: {x-api-key: [sk-live-SECRET]}
            query: {key: 12}
        """
    )
    assert len(found) == 3
    assert not any("SECRET" in message for _, _, message, _ in found)


def test_invalid_names_point_at_the_key() -> None:
    assert check(
        """\
        version: 1
        providers:
          ok: {base_url: x}
          "bad name": {base_url: x}
        routes:
          aliases: {"": "ok:x"}
        """
    ) == [
        (
            4,
            3,
            "invalid name `bad name`: use letters, digits, '.', '_' and '-' only (no ':'),"
            " starting with a letter or digit",
            "/providers/bad name",
        ),
        (6, 13, "invalid name ``: an alias must be 1-256 characters", "/routes/aliases/"),
    ]


def test_alias_target_shape() -> None:
    assert check(
        """\
        version: 1
        routes:
          aliases:
            a: noprovider
            b: [ok:x, 7]
            c: []
            d: 5
        """
    ) == [
        (4, 8, "`noprovider` must be `provider:model` (split at the first colon)",
         "/routes/aliases/a"),
        (5, 15, "expected a string, got an integer (put it in quotes to make it text)",
         "/routes/aliases/b/1"),
        (6, 8, "must list at least 1 item(s)", "/routes/aliases/c"),
        (7, 8, "expected a string or a list or a mapping, got an integer", "/routes/aliases/d"),
    ]  # fmt: skip


def test_top_level_must_be_a_mapping() -> None:
    assert check("- a\n- b\n") == [(1, 1, "expected a mapping, got a list", "/")]


def test_builtin_provider_needs_no_url_keys_or_auth(tmp_path: Path) -> None:
    text = "version: 1\nproviders:\n  echo: {builtin: echo}\n"
    assert check(text) == []
    config = load(tmp_path, text)
    echo = config.providers["echo"]
    assert (echo.builtin, echo.enabled, echo.auth.style, echo.keys) == ("echo", True, "none", ())
    assert config.warnings == ()
    assert "builtin='echo'" in repr(echo)


def test_builtin_provider_problems() -> None:
    assert check(
        """\
        version: 1
        providers:
          a: {builtin: echoo}
          b:
            builtin: echo
            base_url: http://127.0.0.1:1/v1
            keys: sk-live-SECRET-0000
            auth: bearer
          c: {auth: none}
        """
    ) == [
        (3, 16, "`echoo` is not one of: echo; did you mean `echo`?", "/providers/a/builtin"),
        (6, 15, "`http://127.0.0.1:1/v1` is not used by a builtin provider; remove `base_url`",
         "/providers/b/base_url"),
        (7, 11, "is not used by a builtin provider; remove `keys`", "/providers/b/keys"),
        (8, 11, "`bearer` is not used by a builtin provider; remove `auth`", "/providers/b/auth"),
        (9, 3, "missing required key `base_url`", "/providers/c"),
    ]  # fmt: skip
