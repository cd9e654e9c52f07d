"""Run the real `mini-llm serve` in a subprocess for end-to-end tests."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

LISTENING = "mini-llm listening on "

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
        argv = [sys.executable, "-m", "mini_llm", "serve", "-c", str(config), *args]
        if "--port" not in args:
            argv += ["--port", "0"]
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
            if line.startswith(LISTENING):
                self._listening.put(line[len(LISTENING) :].strip())
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
