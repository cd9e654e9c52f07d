"""${VAR}, ${VAR:-default} and $$: expansion, errors with their line, and retyping."""

from __future__ import annotations

from pathlib import Path

import pytest

from mini_llm.interpolate import InterpolationError, expand, retype

from ..helpers import load, problems, where

ENV = {"A": "alpha", "B": "beta", "EMPTY": "", "PORT": "4000", "URL": "http://127.0.0.1:9/v1"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", "plain"),
        ("${A}", "alpha"),
        ("x-${A}-y", "x-alpha-y"),
        ("${A}${B}", "alphabeta"),
        ("${A:-dflt}", "alpha"),
        ("${UNSET:-dflt}", "dflt"),
        ("${EMPTY:-dflt}", "dflt"),  # `:-` also replaces an empty value
        ("${EMPTY}", ""),
        ("${UNSET:-}", ""),
        ("${UNSET:-${A}}", "alpha"),
        ("${UNSET:-${UNSET2:-deep}}", "deep"),
        ("${UNSET:-a ${B} c}", "a beta c"),
        ("${UNSET:-http://h:80/v1}", "http://h:80/v1"),  # `:` and `/` inside a default
        ("$$", "$"),
        ("$${A}", "${A}"),  # `$$` escapes: not a reference
        ("$$$${A}", "$${A}"),
        ("$$${A}", "$alpha"),
        ("${UNSET:-$$5}", "$5"),
        ("cost: $5", "cost: $5"),  # a lone `$` is kept
        ("ends with $", "ends with $"),
        ("$A", "$A"),  # only the braced form expands
    ],
)
def test_expand(text: str, expected: str) -> None:
    assert expand(text, ENV).text == expected


def test_used_and_missing_variables() -> None:
    result = expand("${A}/${NOPE}/${ALSO_NOPE:-x}", ENV)
    assert result.used == ["A", "NOPE", "ALSO_NOPE"]
    assert result.missing == ["NOPE"]


def test_a_default_that_is_not_taken_does_not_count() -> None:
    result = expand("${A:-${NOPE}}", ENV)
    assert (result.text, result.used, result.missing) == ("alpha", ["A"], [])
    result = expand("${UNSET:-${NOPE}}", ENV)
    assert (result.used, result.missing) == (["UNSET", "NOPE"], ["NOPE"])


def test_hole_stands_for_unset_variables() -> None:
    assert expand("a${NOPE}b${A}", ENV, hole="?").text == "a?balpha"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("${", "`${` must be followed by a variable name"),
        ("${}", "`${}`: `${` must be followed by a variable name"),
        ("${1ABC}", "must be followed by a variable name"),
        ("${ A}", "must be followed by a variable name"),
        ("${A", "`${A` must be closed with `}` or continue with `:-default}`"),
        ("${A-x}", "`${A` must be closed"),  # the shell's `-` without `:` is not supported
        ("${A:?required}", "`${A` must be closed"),
        ("${A:-x", "`${A:-` is not closed with `}`"),
        ("${A:-${B:-x}", "`${A:-` is not closed with `}`"),
    ],
)
def test_malformed(text: str, fragment: str) -> None:
    with pytest.raises(InterpolationError) as caught:
        expand(text, ENV)
    assert fragment in str(caught.value)


# In a routing table -----------------------------------------------------------------------------

TABLE = """\
version: 1
server:
  port: {port}
providers:
  openai:
    base_url: {base_url}
    keys: {keys}
routes:
  aliases:
    chat: {target}
"""


def table(
    port: str = "3333",
    base_url: str = "https://api.openai.com/v1",
    keys: str = "sk-test-0000000000000000",
    target: str = "openai:gpt-4o",
) -> str:
    return TABLE.format(port=port, base_url=base_url, keys=keys, target=target)


def test_unset_variable_without_default_is_an_error_with_its_line(tmp_path: Path) -> None:
    found = problems(tmp_path, table(target='"openai:${CHAT_MODEL}"'))
    assert where(found) == [
        (
            10,
            11,
            "environment variable `CHAT_MODEL` is not set and has no default"
            " (write `${CHAT_MODEL:-}` to allow it to be empty)",
        )
    ]
    assert found[0].pointer == "/routes/aliases/chat"


def test_unset_variable_is_reported_once_not_again_by_the_schema(tmp_path: Path) -> None:
    # Without the variable, `port` would also be "not an integer": only the cause is shown.
    found = problems(tmp_path, table(port="${GATEWAY_PORT}"))
    assert [(p.line, p.col) for p in found] == [(3, 9)]
    assert "GATEWAY_PORT" in found[0].message


def test_every_unset_variable_is_reported(tmp_path: Path) -> None:
    found = problems(tmp_path, table(port="${P1}", target='"${PROV}:${MODEL}"'))
    assert [p.message.split(" is not set")[0] for p in found] == [
        "environment variable `P1`",
        # Two problems at one place: sorted by message.
        "environment variable `MODEL`",
        "environment variable `PROV`",
    ]


def test_set_variables_expand(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        table(port="${PORT}", base_url="${URL}", keys="${A},${B}", target='"openai:${A}"'),
        ENV,
    )
    assert config.server.port == 4000
    assert config.providers["openai"].base_url == "http://127.0.0.1:9/v1"
    assert config.providers["openai"].keys == ("alpha", "beta")
    assert [str(t) for t in config.routes.aliases["chat"]] == ["openai:alpha"]
    assert config.environment["/server/port"] == ("PORT",)
    assert config.environment["/providers/openai/keys"] == ("A", "B")


def test_environment_lists_only_variables_that_are_set(tmp_path: Path) -> None:
    config = load(tmp_path, table(keys="${KEYS:-${KEY:-${B}}}"), ENV)
    assert config.environment["/providers/openai/keys"] == ("B",)


# The exception: unset variables that only empty a provider's base_url or keys -------------------


def test_unset_base_url_disables_the_provider_with_a_warning(tmp_path: Path) -> None:
    config = load(tmp_path, table(base_url="${OPENAI_BASE}"))
    provider = config.providers["openai"]
    assert not provider.enabled
    assert provider.disabled_reason == "provider `openai` has no base_url (set OPENAI_BASE)"
    [warning] = config.warnings
    assert (warning.level, warning.line, warning.col) == ("warning", 6, 5)
    assert "set OPENAI_BASE" in warning.message


def test_unset_keys_disable_the_provider_naming_every_variable(tmp_path: Path) -> None:
    config = load(tmp_path, table(keys="${OPENAI_API_KEYS:-${OPENAI_API_KEY}}"))
    assert config.providers["openai"].disabled_reason == (
        "provider `openai` has no keys (set OPENAI_API_KEYS or OPENAI_API_KEY)"
    )
    assert [w.line for w in config.warnings] == [7]


def test_unset_key_in_a_keys_list_only_drops_that_entry(tmp_path: Path) -> None:
    config = load(tmp_path, table(keys='["${K1}", "${K2}", literal-key-000]'), {"K1": "sk-one"})
    assert config.providers["openai"].keys == ("sk-one", "literal-key-000")


def test_unset_key_in_a_comma_list_only_drops_that_entry(tmp_path: Path) -> None:
    config = load(tmp_path, table(keys="${K1},${K2}"), {"K1": "sk-one"})
    assert config.providers["openai"].keys == ("sk-one",)


@pytest.mark.parametrize(
    ("field", "value"),
    [("base_url", "https://${HOST}/v1"), ("keys", "sk-${SUFFIX}"), ("keys", "${K1}x,${K2:-}")],
)
def test_unset_variable_inside_other_text_is_an_error(
    tmp_path: Path, field: str, value: str
) -> None:
    found = problems(tmp_path, table(**{field: value}))
    assert len(found) == 1
    assert "is not set and has no default" in found[0].message
    assert found[0].line == (6 if field == "base_url" else 7)


# Retyping ---------------------------------------------------------------------------------------


def test_plain_interpolated_scalars_are_typed_like_yaml(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
        version: ${VERSION:-1}
        server:
          port: ${P:-8080}
          log_requests: ${LOG:-true}
          shutdown_grace_s: ${GRACE:-2.5}
        providers:
          local:
            base_url: http://127.0.0.1:1/v1
            auth: none
            timeouts:
              connect_s: ${CONNECT:-3}
        """,
    )
    assert config.server.port == 8080
    assert config.server.log_requests is True
    assert config.server.shutdown_grace_s == 2.5
    assert config.providers["local"].timeouts.connect_s == 3


def test_quoted_interpolated_scalars_stay_text(tmp_path: Path) -> None:
    found = problems(tmp_path, table(port='"${P:-8080}"'))
    assert where(found) == [(3, 9, "expected an integer, got a string (value from ${P})")]


def test_text_fields_are_never_retyped(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
        version: 1
        providers:
          p:
            base_url: http://127.0.0.1:1/v1
            keys: ${K:-12345678}
            headers:
              x-num: ${N:-42}
            models:
              - ${M:-7}
        """,
    )
    provider = config.providers["p"]
    assert provider.keys == ("12345678",)
    assert provider.headers == (("x-num", "42"),)
    assert provider.models == ("7",)


def test_alias_target_is_never_retyped(tmp_path: Path) -> None:
    config = load(tmp_path, table(target="openai:${M:-4}"))
    assert [t.model for t in config.routes.aliases["chat"]] == ["4"]


@pytest.mark.parametrize(
    ("text", "value"),
    [("8080", 8080), ("1.5", 1.5), ("true", True), ("off", False), ("", None), ("abc", "abc")],
)
def test_retype(text: str, value: object) -> None:
    assert retype(text) == value
    assert type(retype(text)) is type(value)


def test_malformed_reference_is_reported_at_its_value(tmp_path: Path) -> None:
    found = problems(tmp_path, table(base_url='"${OPENAI_URL"'))
    assert where(found) == [
        (6, 15, "`${OPENAI_URL` must be closed with `}` or continue with `:-default}`")
    ]
