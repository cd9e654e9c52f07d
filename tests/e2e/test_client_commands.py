"""`mini-llm health`, `smoke` and `chat` as real subprocesses against a real gateway and mock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..conftest import GatewayFactory
from ..helpers import GatewayProcess, clean_env, free_port, wait_for
from ..mock_upstream import MockUpstream

KEY = "sk-mock-key-one-1111"
TABLE = """
version: 1
server: {{reload: false}}
defaults:
  retry: {{attempts: 0}}
providers:
  mock:
    base_url: {mock}
    keys: [{key}]
  off:
    base_url: https://example.invalid/v1
    keys: ${{OFF_PROVIDER_KEY:-}}
routes:
  aliases:
    fast: mock:upstream-model
    claude-like: mock:claude-upstream
    offline: off:some-model
    hanging: mock:hang-stream
    breaking: mock:drop-stream
"""


def table(upstream: MockUpstream) -> str:
    return TABLE.format(mock=upstream.url, key=KEY)


@pytest.fixture
def gateway(start_gateway: GatewayFactory, upstream: MockUpstream) -> GatewayProcess:
    return start_gateway(table(upstream))


def mini_llm(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "mini_llm", *args],
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=clean_env(env),
        timeout=timeout,
        check=False,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


class Running:
    """A client command in the background, its output collected as it arrives."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mini_llm", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=clean_env(env),
        )
        self.out = bytearray()
        self.err = bytearray()
        for stream, sink in ((self.process.stdout, self.out), (self.process.stderr, self.err)):
            threading.Thread(target=self._drain, args=(stream, sink), daemon=True).start()

    @staticmethod
    def _drain(stream: Any, sink: bytearray) -> None:
        while chunk := os.read(stream.fileno(), 4096):
            sink += chunk

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(5)
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def background() -> Iterator[list[Running]]:
    started: list[Running] = []
    yield started
    for running in started:
        running.stop()


# mini-llm health -------------------------------------------------------------------------------


def test_health_tables(gateway: GatewayProcess) -> None:
    result = mini_llm("health", "--url", gateway.url)
    assert result.returncode == 0
    out = result.stdout
    assert gateway.url in out and "ok (HTTP 200)" in out
    assert "mock" in out and "sk-…1111 ok" in out
    assert "disabled: provider `off` has no keys (set OFF_PROVIDER_KEY)" in out
    assert KEY not in out


def test_health_json_is_the_gateways_document(gateway: GatewayProcess) -> None:
    result = mini_llm("health", "--json", env={"MINI_LLM_URL": gateway.url})  # found via env
    assert result.returncode == 0
    doc = json.loads(result.stdout)
    assert doc["status"] == "ok" and doc["providers"]["mock"]["key_states"][0]["id"] == "sk-…1111"
    assert (
        doc["config"]["generation"]
        == httpx.get(gateway.url + "/health").json()["config"]["generation"]
    )


def test_health_exits_1_when_nothing_answers() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = mini_llm("health", "--url", url)
    assert result.returncode == 1
    assert f"no gateway answers at {url}" in result.stderr
    result = mini_llm("health", "--json", "--url", url)
    assert result.returncode == 1
    assert json.loads(result.stdout)["reachable"] is False


def test_the_gateway_key_comes_from_mini_llm_key(upstream: MockUpstream) -> None:
    # Pointed at the mock itself, which records what a client sends.
    env = {"MINI_LLM_URL": f"http://127.0.0.1:{upstream.port}", "MINI_LLM_KEY": "gw-key-42"}
    mini_llm("health", env=env)
    seen = upstream.requests[-1]
    assert (seen.method, seen.path) == ("GET", "/health")
    assert seen.headers["x-mini-llm-key"] == "gw-key-42"
    mini_llm("chat", "m", "hi", env=env)
    assert upstream.requests[-1].headers["x-mini-llm-key"] == "gw-key-42"


def test_commands_against_a_gateway_with_auth_on(
    start_gateway: GatewayFactory, upstream: MockUpstream
) -> None:
    secured_table = table(upstream).replace(
        "server: {reload: false}",
        "server: {reload: false, auth: {keys: [{name: cli, key: gw-key-cli-5678}]}}",
    )
    secured = start_gateway(secured_table, name="auth.yaml")
    with_key = {"MINI_LLM_URL": secured.url, "MINI_LLM_KEY": "gw-key-cli-5678"}

    anonymous = mini_llm("health", "--url", secured.url)
    assert anonymous.returncode == 0  # alive, but the details need a key
    assert "auth on" in anonymous.stdout and "MINI_LLM_KEY" in anonymous.stdout
    assert "mock" not in anonymous.stdout
    assert "sk-…1111 ok" in mini_llm("health", env=with_key).stdout

    refused = mini_llm("chat", "fast", "hi", "--url", secured.url)
    assert refused.returncode == 1 and "401: authentication_error" in refused.stderr
    assert mini_llm("chat", "fast", "hi", env=with_key).stdout == "one two three \n"

    refused = mini_llm("smoke", "--url", secured.url)
    assert refused.returncode == 1 and "/v1/models answered 401" in refused.stderr
    assert mini_llm("smoke", "--models", "fast", env=with_key).returncode == 0


def test_the_default_url(upstream: MockUpstream) -> None:
    result = mini_llm("health", "--json")  # nothing set: http://127.0.0.1:3333
    if result.returncode == 1:
        assert "http://127.0.0.1:3333" in result.stdout
    else:  # something does listen on 3333 on this machine: it was asked, at least
        assert result.stdout


# mini-llm smoke --------------------------------------------------------------------------------


def test_smoke_tries_every_model_in_its_api_shape(
    gateway: GatewayProcess, upstream: MockUpstream
) -> None:
    # `hanging` goes silent after its first chunk: a short timeout fails it quickly.
    result = mini_llm("smoke", "--url", gateway.url, "--json", "--timeout", "1")
    doc = json.loads(result.stdout)
    # Every listed model but those of a disabled provider; `hanging` and `breaking` fail.
    by_model: dict[str, list[dict[str, Any]]] = {}
    for row in doc["results"]:
        by_model.setdefault(row["model"], []).append(row)
    assert list(by_model) == ["fast", "claude-like", "offline", "hanging", "breaking"]
    assert [r["mode"] for r in by_model["fast"]] == ["plain", "stream"]
    for row in by_model["fast"] + by_model["claude-like"]:
        assert row["ok"] is True and row["status"] == 200 and row["error"] is None
        assert row["output_tokens"] and row["total_ms"] >= row["ttft_ms"] >= 0
    assert {r["api"] for r in by_model["claude-like"]} == {"anthropic"}
    assert {r["route"] for r in by_model["claude-like"]} == {"mock:claude-upstream"}
    assert [r["skipped"] for r in by_model["offline"]] == ["provider `off` is disabled"] * 2
    assert not any(r["ok"] for r in by_model["breaking"] + by_model["hanging"])
    assert "timed out" in by_model["hanging"][0]["error"]
    assert result.returncode == 1 and doc["ok"] is False
    paths = [(r.path, r.json.get("stream", False)) for r in upstream.requests]
    assert ("/v1/messages", True) in paths and ("/v1/messages", False) in paths
    assert ("/v1/chat/completions", True) in paths


def test_smoke_of_chosen_models_passes_with_a_table(
    gateway: GatewayProcess, upstream: MockUpstream
) -> None:
    result = mini_llm("smoke", "--url", gateway.url, "--models", "fast,claude-like")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for column in ("model", "route", "status", "first token", "total", "tokens"):
        assert column in out
    assert "mock:upstream-model" in out and "mock:claude-upstream" in out
    assert "passed: 4 of 4 requests ok" in out
    assert len(upstream.requests) == 4


def test_smoke_names_what_failed(gateway: GatewayProcess) -> None:
    result = mini_llm("smoke", "--url", gateway.url, "--models", "fast,offline,nowhere")
    assert result.returncode == 1
    assert "503" in result.stdout and "nowhere" in result.stdout and "404" in result.stdout
    assert "FAILED: 2 of 6 requests ok" in result.stdout


def test_smoke_exits_1_when_nothing_answers() -> None:
    result = mini_llm("smoke", "--url", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "no gateway answers" in result.stderr


def test_smoke_with_a_config_starts_and_stops_its_own_gateway(
    tmp_path: Path, upstream: MockUpstream
) -> None:
    path = tmp_path / "mini-llm.yaml"
    path.write_text(table(upstream))
    result = mini_llm("smoke", "-c", str(path), "--models", "fast", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert [r["ok"] for r in doc["results"]] == [True, True]
    with pytest.raises(httpx.ConnectError):  # the gateway it started is gone
        httpx.get(doc["url"] + "/health")


def test_smoke_with_an_invalid_config(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("version: 1\nserver: {port: nope}\n")
    result = mini_llm("smoke", "-c", str(path))
    assert result.returncode == 1
    assert "broken.yaml:2:16: expected an integer, got a string" in result.stderr


# mini-llm chat ---------------------------------------------------------------------------------


def test_chat_one_prompt(gateway: GatewayProcess, upstream: MockUpstream) -> None:
    result = mini_llm(
        "chat", "fast", "Count to three", "--system", "Be brief.", "--url", gateway.url
    )
    assert result.returncode == 0
    assert result.stdout == "one two three \n"
    assert "route mock:upstream-model" in result.stderr
    assert "first token" in result.stderr and "tokens 5 in / 3 out" in result.stderr
    sent = upstream.requests[-1].json
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Count to three"},
    ]


def test_chat_anthropic_shape(gateway: GatewayProcess, upstream: MockUpstream) -> None:
    result = mini_llm(
        "chat", "fast", "Hello", "--api", "anthropic", "--system", "Terse.", "--url", gateway.url
    )
    assert result.returncode == 0
    assert result.stdout == "one two\n"
    seen = upstream.requests[-1]
    assert seen.path == "/v1/messages" and seen.headers["anthropic-version"] == "2023-06-01"
    assert seen.json["system"] == "Terse." and seen.json["max_tokens"] == 1024
    # A claude* name picks the Anthropic shape by itself.
    mini_llm("chat", "mock:claude-3-haiku", "Hi", "--url", gateway.url)
    assert upstream.requests[-1].path == "/v1/messages"


def test_chat_conversation_from_stdin(gateway: GatewayProcess, upstream: MockUpstream) -> None:
    result = mini_llm("chat", "fast", "--url", gateway.url, stdin="hello\n\nagain\n")
    assert result.returncode == 0  # end of input ends the conversation
    assert result.stdout == "one two three \none two three \n"
    assert result.stderr.count("route mock:upstream-model") == 2
    assert [m["content"] for m in upstream.requests[-1].json["messages"]] == [
        "hello",
        "one two three ",
        "again",
    ]


def test_chat_errors(gateway: GatewayProcess) -> None:
    result = mini_llm("chat", "nowhere", "hi", "--url", gateway.url)
    assert result.returncode == 1
    assert "404: model_not_found" in result.stderr and "nowhere" in result.stderr
    result = mini_llm("chat", "breaking", "hi", "--url", gateway.url)
    assert result.returncode == 1
    assert result.stdout.startswith("one two ")  # what came before the break
    assert "stream error" in result.stderr
    result = mini_llm("chat", "fast", "hi", "--url", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1 and "unreachable" in result.stderr


def test_ctrl_c_stops_a_stream_and_the_upstream_request(
    gateway: GatewayProcess, upstream: MockUpstream, background: list[Running]
) -> None:
    chat = Running("chat", "hanging", "Talk forever", "--url", gateway.url)
    background.append(chat)
    wait_for(lambda: b"one " in chat.out, timeout=10)  # the first chunk, then silence
    chat.process.send_signal(signal.SIGINT)
    assert upstream.disconnected.wait(2), "the upstream request was not closed"
    assert chat.process.wait(5) == 130
    assert b"[stopped]" in chat.err


def test_ctrl_c_in_a_conversation_stops_the_answer_then_a_second_one_leaves(
    gateway: GatewayProcess, upstream: MockUpstream, background: list[Running]
) -> None:
    chat = Running("chat", "hanging", "--url", gateway.url)
    background.append(chat)
    assert chat.process.stdin is not None
    chat.process.stdin.write(b"Talk forever\n")
    chat.process.stdin.flush()
    wait_for(lambda: b"one " in chat.out, timeout=10)
    chat.process.send_signal(signal.SIGINT)
    assert upstream.disconnected.wait(2)
    wait_for(lambda: b"[stopped]" in chat.err, timeout=5)  # back at the prompt
    assert chat.process.poll() is None
    chat.process.send_signal(signal.SIGINT)
    assert chat.process.wait(5) == 0
