"""`mini-llm top` against a real gateway, and where it finds one."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import httpx
import pytest

from ..conftest import GatewayFactory
from ..helpers import clean_env, free_port
from ..mock_upstream import MockUpstream


def top(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mini_llm", "top", *args],
        capture_output=True,
        text=True,
        env=clean_env(env),
        timeout=30,
    )


def test_one_frame_of_a_busy_gateway(start_gateway: GatewayFactory, upstream: MockUpstream) -> None:
    gateway = start_gateway(
        f"""version: 1
providers:
  mock:
    base_url: {upstream.url}
    keys: [sk-mock-key-00000001]
routes:
  aliases:
    fast: mock:gpt-x
    broken: mock:status-400
"""
    )
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(base_url=gateway.url, timeout=10) as http:
            while not stop.is_set():
                http.post("/v1/chat/completions", json={"model": "fast", "stream": True})
                http.post("/v1/chat/completions", json={"model": "broken"})

    thread = threading.Thread(target=traffic, daemon=True)
    thread.start()
    try:
        result = top("--url", gateway.url, "--once")
    finally:
        stop.set()
        thread.join(10)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"mini-llm top {gateway.url}  version ")
    assert "config generation 1" in lines[0]
    fast = next(line for line in lines if "│ fast " in line)
    broken = next(line for line in lines if "│ broken " in line)
    cells = [c.strip() for c in fast.split("│")[1:-1]]
    assert cells[:2] == ["fast", "mock"] and float(cells[2]) > 0 and cells[3] == "0%"
    assert cells[4].endswith("ms") and cells[6].endswith("ms")
    assert [c.strip() for c in broken.split("│")[1:-1]][3] == "100%"
    tokens = next(line for line in lines if "│ gpt-x " in line)  # usage chunks, asked for
    assert float(tokens.split("│")[3]) > 0
    assert any("sk-…0001 ok" in line for line in lines)


class _Fake(BaseHTTPRequestHandler):
    seen: ClassVar[list[dict[str, str]]] = []

    def do_GET(self) -> None:
        _Fake.seen.append({name.lower(): value for name, value in self.headers.items()})
        body = b"mini_llm_in_flight_requests 0\n"
        if self.path == "/health":
            body = json.dumps({"status": "ok", "config": {"generation": 7}}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def fake_gateway() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Fake)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Fake.seen.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_url_and_key_come_from_the_environment(fake_gateway: str) -> None:
    env = {"MINI_LLM_URL": fake_gateway, "MINI_LLM_KEY": "gw-key-123"}
    result = top("--interval", "0.1", env=env)  # not a terminal: one frame
    assert result.returncode == 0, result.stderr
    assert "config generation 7" in result.stdout
    assert len(_Fake.seen) == 4  # /metrics and /health, twice
    assert all(headers.get("x-mini-llm-key") == "gw-key-123" for headers in _Fake.seen)


def test_an_unreachable_gateway_exits_1() -> None:
    result = top("--url", f"http://127.0.0.1:{free_port()}", "--once")
    assert result.returncode == 1
    assert result.stderr.startswith("mini-llm top: cannot reach http://127.0.0.1:")
    assert result.stdout == ""


def test_a_gateway_with_keys(start_gateway: GatewayFactory, upstream: MockUpstream) -> None:
    key = "gw-top-0123456789abcdef"
    gateway = start_gateway(
        f"""version: 1
server:
  auth: {{keys: ["{key}"]}}
providers:
  mock: {{base_url: "{upstream.url}", keys: sk-mock-key-00000001}}
routes: {{aliases: {{fast: "mock:gpt-x"}}}}
"""
    )
    refused = top("--url", gateway.url, "--once")
    assert refused.returncode == 1
    assert refused.stderr == f"mini-llm top: {gateway.url}/metrics answered 401\n"
    shown = top("--url", gateway.url, "--once", "--interval", "0.1", env={"MINI_LLM_KEY": key})
    assert shown.returncode == 0, shown.stderr
    assert "config generation 1" in shown.stdout and "sk-…0001 ok" in shown.stdout
