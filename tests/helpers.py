"""Helpers shared by the unit and end-to-end tests: tables, a real gateway process, polling."""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from mini_llm.config import Config, load_config
from mini_llm.contract import http_url, parse_listening_line, serve_argv
from mini_llm.source import ConfigError, Problem

REPO = Path(__file__).resolve().parent.parent

MINIMAL = """\
version: 1
providers:
  openai:
    base_url: https://api.openai.com/v1
    keys: sk-test-0000000000000000
"""


def write(tmp_path: Path, text: str, name: str = "mini-llm.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, env: Mapping[str, str] | None = None) -> Config:
    """Load a table that must be valid."""
    return load_config(write(tmp_path, text), env or {})


def problems(tmp_path: Path, text: str, env: Mapping[str, str] | None = None) -> list[Problem]:
    """Load a table that must be invalid; its problems."""
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), env or {})
    return caught.value.problems


def where(found: list[Problem]) -> list[tuple[int, int, str]]:
    """(line, col, message) of each problem, for compact assertions."""
    return [(p.line, p.col, p.message) for p in found]


# Variables from the developer's shell that would change what the default table does.
_SCRUBBED_PREFIXES = (
    "MINI_LLM",
    "OPENAI_",
    "ANTHROPIC_",
    "NEBIUS_",
    "DEEPINFRA_",
    "CUSTOM_PROVIDER",
)


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_PREFIXES)}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class GatewayProcess:
    """`python -m mini_llm serve` with its stdout line parsed and its stderr collected."""

    def __init__(
        self,
        config: Path,
        *args: str,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        port = None if "--port" in args else 0
        argv = [*serve_argv(python=sys.executable, config=config, port=port), *args]
        self.process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env(env),
            cwd=cwd,
        )
        self.stderr_lines: list[str] = []
        self.stdout_lines: list[str] = []
        self._listening: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        self._stderr_thread = threading.Thread(target=self._read_stderr, daemon=True)
        self._stderr_thread.start()
        self.url = ""

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.stdout_lines.append(line)
            address = parse_listening_line(line)
            if address is not None:
                self._listening.put(http_url(*address))
        self._listening.put(None)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr_lines.append(line)

    def wait_listening(self, timeout: float = 15.0) -> str:
        url = self._listening.get(timeout=timeout)
        if url is None:
            self.process.wait(5)
            raise RuntimeError("gateway exited before listening:\n" + self.stderr())
        self.url = url
        return url

    def stderr(self) -> str:
        return "".join(self.stderr_lines)

    def wait_stderr(self, text: str, timeout: float = 10.0) -> bool:
        """Wait until `text` appears on stderr (a log line), bounded."""
        done = threading.Event()

        def poll() -> None:
            while not done.is_set():
                if text in self.stderr():
                    done.set()
                    return
                if self.process.poll() is not None and not self._stderr_thread.is_alive():
                    return
                done.wait(0.02)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        poller.join(timeout)
        found = done.is_set()
        done.set()
        return found

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.process.send_signal(signum)

    def stop(self, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(5)
        self._stderr_thread.join(5)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
        return code


def free_port() -> int:
    """A port that was free a moment ago: for tables that must point at a dead upstream."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], object], timeout: float = 3.0) -> float:
    """Poll a condition until true; the seconds it took. Fails the test on timeout."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(0.01)
    raise AssertionError(f"condition not met within {timeout}s")


async def eventually(condition: Callable[[], object], timeout: float = 3.0) -> float:
    """`wait_for` on the running event loop, for a state no event signals."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        await asyncio.sleep(0.002)
    raise AssertionError(f"condition not met within {timeout}s")


class RedisServer:
    """A real redis-server of our own on a free loopback port, its files in a temp folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--dir", str(self.folder), "--save", "", "--appendonly", "no"]
        argv += ["--enable-debug-command", "local"]  # DEBUG SLEEP makes a slow server
        self.process = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.folder
        )
        wait_for(self.answers, timeout=10)
        return self

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: the server vanishes mid-conversation, as a crashed or OOM-killed one does."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=5)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
