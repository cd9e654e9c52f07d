"""The real `mini-llm` executable, in a subprocess with a controlled environment."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mini_llm.config import packaged_default
from mini_llm.masking import mask

from ..helpers import REPO

SCRIPT = Path(sys.executable).parent / "mini-llm"
RUNNERS = ["module", "script"]

# Recognisable fake keys: none of them may appear in any output, only their masked form.
OPENAI_KEY = "sk-proj-PLANTED0penai-1111aaaa"
OPENAI_KEY_2 = "sk-proj-PLANTED0penai-2222bbbb"
ANTHROPIC_KEY = "sk-ant-PLANTEDanthr0pic-3333cccc"
GEMINI_KEY = "AIzaSy-PLANTEDgemini-4444dddd"
SECRET_HEADER = "PLANTEDheader-value-5555eeee"
PLANTED = (OPENAI_KEY, OPENAI_KEY_2, ANTHROPIC_KEY, GEMINI_KEY, SECRET_HEADER)

TABLE = """\
version: 1
providers:
  openai:
    base_url: https://api.openai.com/v1
    keys: ${OPENAI_API_KEYS:-${OPENAI_API_KEY:-}}
  anthropic:
    base_url: https://api.anthropic.com/v1
    auth: {style: header, header: x-api-key}
    keys: ${ANTHROPIC_API_KEY:-}
    headers: {anthropic-version: "2023-06-01", x-secret-token: "${SECRET_HEADER:-}"}
  gemini:
    base_url: https://generativelanguage.googleapis.com/v1beta/openai
    auth: {style: query, param: key}
    keys: ${GEMINI_API_KEY:-}
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
    gemini-flash: gemini:gemini-2.0-flash
    llama: [nebius:meta-llama/Meta-Llama-3.1-70B-Instruct, ollama:llama3:70b]
  prefixes:
    "claude-": anthropic
    "gpt-": openai
  default: ${DEFAULT_PROVIDER:-openai}
"""


def clean_env(**extra: str) -> dict[str, str]:
    """Only what a subprocess needs: none of the caller's keys or MINI_LLM_* settings."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(REPO),  # the checkout, even if an older mini-llm is installed
        "PYTHONDONTWRITEBYTECODE": "1",
        "LANG": "C.UTF-8",
    }
    env.update(extra)
    return env


def run(
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    runner: str = "module",
) -> subprocess.CompletedProcess[str]:
    if runner == "script":
        if not SCRIPT.exists():
            pytest.skip("the mini-llm console script is not installed next to sys.executable")
        command = [str(SCRIPT), *args]
    else:
        command = [sys.executable, "-m", "mini_llm", *args]
    result = subprocess.run(
        command,
        cwd=cwd,
        env=env if env is not None else clean_env(),
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=60,
        check=False,
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert "Traceback" not in result.stdout, result.stdout
    return result


@pytest.fixture
def table(tmp_path: Path) -> Path:
    path = tmp_path / "table.yaml"
    path.write_text(TABLE)
    return path


def planted_env(**extra: str) -> dict[str, str]:
    return clean_env(
        OPENAI_API_KEYS=f"{OPENAI_KEY}, {OPENAI_KEY_2}",
        ANTHROPIC_API_KEY=ANTHROPIC_KEY,
        GEMINI_API_KEY=GEMINI_KEY,
        SECRET_HEADER=SECRET_HEADER,
        **extra,
    )


def assert_no_secret(text: str) -> None:
    for secret in PLANTED:
        assert secret not in text
        assert "PLANTED" not in text  # not even a long slice of one


# check-config ------------------------------------------------------------------------------------


@pytest.mark.parametrize("runner", RUNNERS)
def test_check_config_valid(table: Path, runner: str) -> None:
    result = run("check-config", "-c", str(table), cwd=table.parent, runner=runner)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.rstrip().endswith(f"{table}: valid")
    for heading in ("Providers", "Routes", "Server"):
        assert heading in out
    assert "https://api.anthropic.com/v1" in out
    assert "header x-api-key" in out


def test_check_config_warns_for_disabled_providers_naming_the_variable(table: Path) -> None:
    result = run("check-config", "-c", str(table), cwd=table.parent)
    assert result.returncode == 0
    warnings = [line for line in result.stdout.splitlines() if ": warning: " in line]
    assert warnings == [
        f"{table}:5:5: warning: provider `openai` has no keys (set OPENAI_API_KEYS or"
        " OPENAI_API_KEY); requests routed to it get 503 (at /providers/openai/keys)",
        f"{table}:9:5: warning: provider `anthropic` has no keys (set ANTHROPIC_API_KEY);"
        " requests routed to it get 503 (at /providers/anthropic/keys)",
        f"{table}:14:5: warning: provider `gemini` has no keys (set GEMINI_API_KEY);"
        " requests routed to it get 503 (at /providers/gemini/keys)",
        f"{table}:20:5: warning: provider `nebius` has no keys (set NEBIUS_API_KEY);"
        " requests routed to it get 503 (at /providers/nebius/keys)",
    ]


def test_check_config_json(table: Path) -> None:
    result = run("check-config", "-c", str(table), "--json", cwd=table.parent, env=planted_env())
    assert result.returncode == 0
    facts = json.loads(result.stdout)
    assert facts["valid"] is True
    assert facts["path"] == str(table)
    assert facts["errors"] == []
    assert set(facts) >= {"providers", "routes", "server", "environment", "warnings"}
    openai = facts["providers"]["openai"]
    assert openai["enabled"] is True
    assert openai["keys"] == 2
    assert openai["auth"] == "bearer"
    assert openai["base_url"] == "https://api.openai.com/v1"
    nebius = facts["providers"]["nebius"]
    assert (nebius["enabled"], nebius["keys"]) == (False, 0)
    assert "NEBIUS_API_KEY" in nebius["disabled_reason"]
    assert facts["routes"]["aliases"]["llama"] == [
        "nebius:meta-llama/Meta-Llama-3.1-70B-Instruct",
        "ollama:llama3:70b",
    ]
    assert facts["routes"]["prefixes"] == {"claude-": "anthropic", "gpt-": "openai"}
    assert facts["routes"]["default"] == "openai"
    assert facts["server"]["port"] == 3333
    [warning] = facts["warnings"]
    assert (warning["line"], warning["col"], warning["level"]) == (20, 5, "warning")
    environment = {e["pointer"]: e["variables"] for e in facts["environment"]}
    assert environment["/providers/openai/keys"] == ["OPENAI_API_KEYS"]
    assert environment["/providers/gemini/keys"] == ["GEMINI_API_KEY"]
    assert_no_secret(result.stdout + result.stderr)


def test_check_config_shows_values_from_the_environment(table: Path) -> None:
    env = clean_env(MINI_LLM_PORT="4100", MINI_LLM__SERVER__HOST="0.0.0.0")
    result = run("check-config", "-c", str(table), cwd=table.parent, env=env)
    assert result.returncode == 0
    assert "4100  (from MINI_LLM_PORT)" in result.stdout
    assert "0.0.0.0  (from MINI_LLM__SERVER__HOST)" in result.stdout
    assert "From the environment" in result.stdout


@pytest.mark.parametrize("runner", RUNNERS)
def test_check_config_invalid(tmp_path: Path, runner: str) -> None:
    source = REPO / "tests" / "unit" / "invalid" / "several-problems.yaml"
    path = tmp_path / "broken.yaml"
    shutil.copy(source, path)
    expected = [
        line.removeprefix("# expect: ")
        for line in source.read_text().splitlines()
        if line.startswith("# expect: ")
    ]
    result = run("check-config", "-c", str(path), cwd=tmp_path, runner=runner)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert len(lines) == len(expected)
    for line, expect in zip(lines, expected, strict=True):
        position, fragment = expect.split(" ", 1)
        assert line.startswith(f"{path}:{position}: ")
        assert fragment in line
    assert result.stderr.strip() == f"{path}: {len(expected)} error(s)"


def test_check_config_invalid_json(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("version: 1\nproviders:\n  openai:\n    base_ur: https://x/v1\n")
    result = run("check-config", "-c", str(path), "--json", cwd=tmp_path)
    assert result.returncode == 1
    facts = json.loads(result.stdout)
    assert facts["valid"] is False
    assert facts["path"] == str(path)
    assert [(e["line"], e["col"], e["pointer"]) for e in facts["errors"]] == [
        (3, 3, "/providers/openai"),
        (4, 5, "/providers/openai/base_ur"),
    ]
    assert facts["errors"][1]["message"] == "unknown key `base_ur`; did you mean `base_url`?"
    assert facts["errors"][1]["level"] == "error"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("version: 1\nproviders: {a: {base_url: x}\n", "YAML syntax error"),
        ("", "the file is empty"),
        (
            "version: 1\nserver:\n  port: ${UNSET_PORT_FOR_TEST}\n",
            "`UNSET_PORT_FOR_TEST` is not set",
        ),
        ("\x00", "YAML syntax error"),
    ],
)
def test_broken_files_exit_1_without_traceback(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    result = run("check-config", "-c", str(path), cwd=tmp_path)
    assert result.returncode == 1
    assert fragment in result.stdout


def test_missing_file(tmp_path: Path) -> None:
    result = run("check-config", "-c", "nope.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout.strip() == "nope.yaml:1:1: file not found"


def test_directory_instead_of_a_file(tmp_path: Path) -> None:
    result = run("check-config", "-c", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 1
    assert "is a directory" in result.stdout


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "locked.yaml"
    path.write_text("version: 1\n")
    path.chmod(0)
    result = run("check-config", "-c", str(path), cwd=tmp_path)
    assert result.returncode == 1
    assert "permission denied" in result.stdout


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"MINI_LLM_PORT": "eighty"}, "MINI_LLM_PORT='eighty' is not a port number 0-65535"),
        ({"MINI_LLM_PORT": "99999"}, "MINI_LLM_PORT='99999' is not a port number"),
        ({"MINI_LLM_LOG_REQUESTS": "perhaps"}, "MINI_LLM_LOG_REQUESTS='perhaps'"),
        ({"MINI_LLM_MODEL_ALIASES": "{oops"}, "MINI_LLM_MODEL_ALIASES is not valid JSON"),
        ({"MINI_LLM__SERVER__PORT": "abc"}, "(set by MINI_LLM__SERVER__PORT)"),
    ],
)
def test_malformed_environment_exits_1_naming_the_variable(
    table: Path, env: dict[str, str], fragment: str
) -> None:
    result = run("check-config", "-c", str(table), cwd=table.parent, env=clean_env(**env))
    assert result.returncode == 1
    assert fragment in result.stdout


def test_route_with_a_malformed_environment_exits_1(table: Path) -> None:
    env = clean_env(MINI_LLM_PORT="eighty")
    result = run("route", "gpt-4o", "-c", str(table), cwd=table.parent, env=env)
    assert result.returncode == 1
    assert "MINI_LLM_PORT='eighty' is not a port number 0-65535" in result.stdout


# Keys never appear -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["check-config"],
        ["check-config", "--json"],
        ["route", "gpt-4o"],
        ["route", "claude-sonnet", "--json"],
        ["route", "gemini-flash"],
        ["route", "gemini-flash", "--json"],
    ],
)
def test_keys_never_appear_only_masked(table: Path, args: list[str]) -> None:
    result = run(*args, "-c", str(table), cwd=table.parent, env=planted_env())
    assert result.returncode == 0, result.stdout
    assert_no_secret(result.stdout + result.stderr)
    if args[0] == "route":
        key = {"gpt-4o": OPENAI_KEY, "claude-sonnet": ANTHROPIC_KEY, "gemini-flash": GEMINI_KEY}
        assert mask(key[args[1]]) in result.stdout


def test_route_shows_masked_secret_headers(table: Path) -> None:
    result = run("route", "claude-sonnet", "--json", "-c", str(table), cwd=table.parent,
                 env=planted_env())  # fmt: skip
    [target] = json.loads(result.stdout)["targets"]
    assert target["headers"] == {
        "anthropic-version": "2023-06-01",
        "x-secret-token": mask(SECRET_HEADER),
        "x-api-key": mask(ANTHROPIC_KEY),
    }


def test_keys_never_appear_in_errors(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(
        "version: 1\nproviders:\n  p:\n    base_url: x\n"
        f"    keys: {{k: {OPENAI_KEY}}}\n    headers: {{x-api-key: [{SECRET_HEADER}]}}\n"
    )
    for extra in ([], ["--json"]):
        result = run("check-config", "-c", str(path), *extra, cwd=tmp_path, env=planted_env())
        assert result.returncode == 1
        assert_no_secret(result.stdout + result.stderr)


# route -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "rule", "matched", "targets"),
    [
        ("gpt-4o", "alias", "gpt-4o", [("openai", "gpt-4o-2024-08-06")]),
        (
            "llama",
            "alias",
            "llama",
            [("nebius", "meta-llama/Meta-Llama-3.1-70B-Instruct"), ("ollama", "llama3:70b")],
        ),
        ("ollama:llama3:8b", "explicit", "ollama", [("ollama", "llama3:8b")]),
        ("claude-3-opus", "prefix", "claude-", [("anthropic", "claude-3-opus")]),
        ("mistral-large", "default", "openai", [("openai", "mistral-large")]),
    ],
)
def test_route_each_rule(
    table: Path, model: str, rule: str, matched: str, targets: list[tuple[str, str]]
) -> None:
    result = run("route", model, "-c", str(table), "--json", cwd=table.parent, env=planted_env())
    assert result.returncode == 0
    facts = json.loads(result.stdout)
    assert (facts["resolved"], facts["rule"], facts["matched"]) == (True, rule, matched)
    assert [(t["provider"], t["model"]) for t in facts["targets"]] == targets


def test_route_text(table: Path) -> None:
    result = run("route", "ollama:llama3:8b", "-c", str(table), cwd=table.parent)
    assert result.returncode == 0
    out = result.stdout
    assert "ollama:llama3:8b matched explicit provider `ollama:`" in out
    assert "llama3:8b  (body rewritten)" in out
    assert "http://127.0.0.1:11434/v1/chat/completions" in out


def test_route_details(table: Path) -> None:
    result = run(
        "route", "gemini-flash", "--path", "/v1/embeddings", "--json", "-c", str(table),
        cwd=table.parent, env=planted_env(),
    )  # fmt: skip
    [target] = json.loads(result.stdout)["targets"]
    assert target["url"] == (
        f"https://generativelanguage.googleapis.com/v1beta/openai/embeddings?key={mask(GEMINI_KEY)}"
    )
    assert target["enabled"] is True
    assert target["body_rewritten"] is True


def test_route_to_a_disabled_provider_says_503_and_the_variable(table: Path) -> None:
    result = run("route", "llama", "-c", str(table), cwd=table.parent)
    assert result.returncode == 0  # it resolves; serving it would answer 503
    assert "disabled: provider `nebius` has no keys (set NEBIUS_API_KEY) (503)" in result.stdout


@pytest.mark.parametrize("runner", RUNNERS)
def test_route_not_found_exits_1_with_nearest_aliases(table: Path, runner: str) -> None:
    env = clean_env(DEFAULT_PROVIDER="")
    strict = table.read_text().replace("${DEFAULT_PROVIDER:-openai}", "null")
    table.write_text(strict)
    result = run("route", "gpt4o", "-c", str(table), cwd=table.parent, env=env, runner=runner)
    assert result.returncode == 1
    assert "not routed" in result.stdout
    assert "did you mean 'gpt-4o'?" in result.stdout
    result = run("route", "clude-sonnet", "--json", "-c", str(table), cwd=table.parent, env=env)
    assert result.returncode == 1
    facts = json.loads(result.stdout)
    assert facts["resolved"] is False
    assert facts["suggestions"][0] == "claude-sonnet"


def test_route_model_names_are_text_not_markup(table: Path) -> None:
    model = "[/bold] a:smile:b [red]x[/red]"
    result = run("route", model, "-c", str(table), cwd=table.parent)
    assert result.returncode == 0
    assert model in result.stdout


def test_route_on_an_invalid_table_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("version: 2\n")
    result = run("route", "gpt-4o", "-c", str(path), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout.startswith(f"{path}:1:10: must be 1")


# Which file -----------------------------------------------------------------------------------


def minimal(port: int) -> str:
    return f"version: 1\nserver: {{port: {port}}}\n"


def port_of(result: subprocess.CompletedProcess[str]) -> int:
    facts: dict[str, Any] = json.loads(result.stdout)
    port: int = facts["server"]["port"]
    return port


def test_config_discovery_order(tmp_path: Path) -> None:
    (tmp_path / "mini-llm.yaml").write_text(minimal(4001))
    (tmp_path / "env.yaml").write_text(minimal(4002))
    (tmp_path / "flag.yaml").write_text(minimal(4003))
    env = clean_env(MINI_LLM_CONFIG=str(tmp_path / "env.yaml"))

    local = run("check-config", "--json", cwd=tmp_path)
    assert (port_of(local), json.loads(local.stdout)["path"]) == (4001, "mini-llm.yaml")
    assert port_of(run("check-config", "--json", cwd=tmp_path, env=env)) == 4002
    flagged = run("check-config", "--json", "-c", "flag.yaml", cwd=tmp_path, env=env)
    assert port_of(flagged) == 4003


def test_missing_mini_llm_config_is_an_error_not_a_fallback(tmp_path: Path) -> None:
    (tmp_path / "mini-llm.yaml").write_text(minimal(4001))
    env = clean_env(MINI_LLM_CONFIG=str(tmp_path / "gone.yaml"))
    result = run("check-config", cwd=tmp_path, env=env)
    assert result.returncode == 1
    assert "gone.yaml:1:1: file not found" in result.stdout


def test_packaged_default_when_there_is_no_file(tmp_path: Path) -> None:
    result = run("check-config", "--json", cwd=tmp_path)
    assert result.returncode == 0
    facts = json.loads(result.stdout)
    assert facts["path"] == str(packaged_default())
    assert set(facts["providers"]) == {
        "openai",
        "anthropic",
        "nebius",
        "deepinfra",
        "custom",
        "echo",
    }
    assert facts["routes"]["default"] == "openai"
    # No keys in this environment: every provider but the builtin echo is disabled.
    assert len(facts["warnings"]) == 5
    echo = facts["providers"]["echo"]
    assert (echo["enabled"], echo["builtin"], echo["keys"]) == (True, "echo", 0)
    assert facts["routes"]["aliases"]["demo"] == ["echo:echo-1"]
    custom = facts["providers"]["custom"]
    assert "CUSTOM_PROVIDER_URL" in custom["disabled_reason"]
    assert "CUSTOM_PROVIDER_KEY" in custom["disabled_reason"]


def test_default_table_routes_demo_to_the_builtin_echo(tmp_path: Path) -> None:
    shown = run("route", "demo", cwd=tmp_path)
    assert shown.returncode == 0
    assert "builtin:echo/chat/completions" in shown.stdout
    assert "answered inside the gateway" in shown.stdout
    table = run("check-config", cwd=tmp_path)
    assert "builtin:echo (inside the gateway)" in table.stdout
    facts = json.loads(run("route", "demo", "--json", cwd=tmp_path).stdout)
    [target] = facts["targets"]
    assert (target["provider"], target["model"], target["builtin"]) == ("echo", "echo-1", "echo")
    assert (target["enabled"], target["headers"]) == (True, {})


def test_default_table_with_keys(tmp_path: Path) -> None:
    env = clean_env(
        OPENAI_API_KEY=OPENAI_KEY,
        ANTHROPIC_API_KEYS=f"{ANTHROPIC_KEY},{OPENAI_KEY_2}",
        CUSTOM_PROVIDER_URL="http://127.0.0.1:8000/v1",
        CUSTOM_PROVIDER_KEY=GEMINI_KEY,
    )
    result = run("check-config", "--json", cwd=tmp_path, env=env)
    facts = json.loads(result.stdout)
    assert facts["providers"]["openai"]["keys"] == 1
    assert facts["providers"]["anthropic"]["keys"] == 2
    assert facts["providers"]["custom"]["enabled"] is True
    assert [w["pointer"] for w in facts["warnings"]] == [
        "/providers/nebius/keys",
        "/providers/deepinfra/keys",
    ]
    assert_no_secret(result.stdout)


# Robustness --------------------------------------------------------------------------------------


def test_output_that_cannot_encode_the_mask(table: Path) -> None:
    env = planted_env(PYTHONIOENCODING="ascii")
    for args in (["check-config"], ["route", "gpt-4o"]):
        result = run(*args, "-c", str(table), cwd=table.parent, env=env)
        assert result.returncode == 0
        assert_no_secret(result.stdout)


def test_unknown_mini_llm_variable_is_a_warning(table: Path) -> None:
    result = run("check-config", "-c", str(table), cwd=table.parent,
                 env=clean_env(MINI_LLM_PROT="1"))  # fmt: skip
    assert result.returncode == 0
    assert "unknown variable `MINI_LLM_PROT` is ignored; did you mean `MINI_LLM_PORT`?" in (
        result.stdout
    )


def test_version_and_usage(tmp_path: Path) -> None:
    result = run("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("mini-llm ")
    result = run("route", cwd=tmp_path)  # MODEL missing: argparse's usage error
    assert result.returncode == 2
    assert "usage:" in result.stderr


def test_gateway_keys_and_the_signing_secret_never_show(tmp_path: Path) -> None:
    (tmp_path / "mini-llm.yaml").write_text(
        """\
version: 1
server:
  auth:
    keys: [{name: passy, key: "gw-secret-key-0123456789"}, "gw-bare-key-9876543210"]
    hmac_secret: hmac-secret-value-42
providers:
  echo: {builtin: echo}
routes: {default: echo}
"""
    )
    outputs = [
        run("check-config", cwd=tmp_path).stdout,
        run("check-config", "--json", cwd=tmp_path).stdout,
        run("route", "anything", cwd=tmp_path).stdout,
        run("route", "anything", "--json", cwd=tmp_path).stdout,
    ]
    for shown in outputs:
        assert "gw-secret-key" not in shown and "gw-bare-key" not in shown
        assert "hmac-secret-value" not in shown
    facts = json.loads(outputs[1])
    assert facts["server"]["auth"]["keys"] == ["passy", "key-2"]
    assert facts["server"]["auth"]["hmac_secret"] == "hma…e-42"
