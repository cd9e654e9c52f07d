"""Gateway: run `mini-llm serve` as a supervised child of a sync parent application."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from typing import IO, TYPE_CHECKING

from ..contract import http_url
from ._child import (
    KILL_WAIT_S,
    POLL_S,
    READ_BYTES,
    RUNNING,
    Backoff,
    Base,
    Output,
    health_request,
    log,
    status_ok,
)
from .errors import GatewayError, GatewayStartError

if TYPE_CHECKING:
    from types import TracebackType


class _Child:
    """A running `mini-llm serve` whose pipes two threads drain, so it never blocks on them."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.output = Output()
        self.started = time.monotonic()
        self.ready = threading.Event()  # the listening line was seen, or stdout closed
        self.process = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            # Its own session: the terminal's Ctrl-C and hang-up go to the parent, which
            # stops the child itself (and SIGHUP means "reload" to the gateway).
            start_new_session=True,
        )
        streams = {"stdout": self.process.stdout, "stderr": self.process.stderr}
        self._readers = [
            threading.Thread(
                target=self._drain,
                args=(name, stream),
                name=f"mini-llm-{name}-{self.process.pid}",
                daemon=True,
            )
            for name, stream in streams.items()
            if stream is not None
        ]
        for reader in self._readers:
            reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _drain(self, name: str, stream: IO[bytes]) -> None:
        fd = stream.fileno()  # raw reads: a chunk as soon as it arrives, no buffering
        try:
            while data := os.read(fd, READ_BYTES):
                if self.output.feed(name, data):
                    self.ready.set()
        except (OSError, ValueError):
            pass  # the pipe was closed under us: nothing more to read
        finally:
            self.output.feed(name, b"")
            if name == "stdout":
                self.ready.set()

    def wait_ready(self, timeout: float, abort: threading.Event | None) -> tuple[str, int]:
        """The address from the listening line, then a healthy /health; or raise."""
        deadline = self.started + timeout
        while not self.ready.wait(POLL_S):
            self._check(deadline, abort, "printed no listening line")
        address = self.output.address
        if address is None:
            raise self._failed(deadline, "exited before listening")
        while not _healthy(*address, timeout=max(POLL_S, deadline - time.monotonic())):
            if self.process.poll() is not None:
                raise self._failed(deadline, "exited before /health answered")
            self._check(deadline, abort, f"listened on {http_url(*address)} but /health is not 200")
            time.sleep(POLL_S)
        return address

    def _check(self, deadline: float, abort: threading.Event | None, what: str) -> None:
        if abort is not None and abort.is_set():
            raise GatewayError("stopped while starting")
        if time.monotonic() >= deadline:
            self.kill()
            timeout = deadline - self.started
            raise self.output.failure(f"mini-llm serve {what} within {timeout:g}s", None)

    def _failed(self, deadline: float, what: str) -> GatewayError:
        try:
            code = self.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            code = None  # closed its stdout yet lives on: treat like a timeout
        self.kill()
        return self.output.failure(f"mini-llm serve {what} (exit code {code})", code)

    def stop(self, grace: float) -> None:
        """SIGTERM, then SIGKILL after `grace` (at once for 0); reap it, close its pipes."""
        if grace > 0 and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                log.warning("mini-llm serve (pid %d) ignored SIGTERM: killing", self.process.pid)
        if self.process.poll() is None:
            self.process.kill()
        try:
            self.process.wait(KILL_WAIT_S)
        except subprocess.TimeoutExpired:
            log.error("mini-llm serve (pid %d) survived SIGKILL", self.process.pid)
            return
        for reader in self._readers:
            reader.join(KILL_WAIT_S)
        # Closing a pipe another thread still reads from would block, so only once they ended.
        if not any(reader.is_alive() for reader in self._readers):
            for stream in (self.process.stdout, self.process.stderr):
                if stream is not None:
                    stream.close()

    def kill(self) -> None:
        self.stop(0)


def _healthy(host: str, port: int, timeout: float) -> bool:
    """One GET /health; plain sockets keep http.client's import cost out of the SDK."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(health_request(host))
            received = b""
            while b"\r\n" not in received and len(received) < 1024:
                chunk = sock.recv(1024)
                if not chunk:
                    break
                received += chunk
    except OSError:
        return False
    return status_ok(received.split(b"\r\n", 1)[0])


class Gateway(Base[_Child]):
    """`mini-llm serve` as a child process: `with Gateway(...) as gw: use(gw.url)`."""

    def _setup(self) -> None:
        self._lock = threading.Lock()  # guards _child against the supervisor thread
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None

    @property
    def process(self) -> subprocess.Popen[bytes]:
        """The current child (after a restart, the new one)."""
        if self._child is None:
            raise GatewayError("the gateway is not running")
        return self._child.process

    def start(self) -> Gateway:
        """Spawn the child and return once /health answers; raise GatewayError otherwise."""
        with self._lock:
            if self._child is not None:
                return self
            self._stopping.clear()
            child = self._launch(restart=False)
            self._child, self._address = child, child.output.address
            RUNNING.add(self)
        if self.restart_on_crash:
            self._supervisor = threading.Thread(
                target=self._supervise, name=f"mini-llm-supervisor-{self.port}", daemon=True
            )
            self._supervisor.start()
        return self

    def stop(self) -> None:
        """Stop the child (SIGTERM, SIGKILL after `stop_grace`); no restart follows."""
        self._stopping.set()  # first, so the supervisor does not restart what we stop
        with self._lock:
            child, self._child = self._child, None
        if child is not None:
            child.stop(self.stop_grace)
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None and supervisor is not threading.current_thread():
            # Every wait in the supervisor watches _stopping, so this is quick.
            supervisor.join(self.stop_grace + KILL_WAIT_S)
        RUNNING.discard(self)

    def _launch(self, *, restart: bool, abort: threading.Event | None = None) -> _Child:
        argv, env = self._spawn_args(restart=restart)
        try:
            child = _Child(argv, env)
        except OSError as exc:
            raise GatewayStartError(f"cannot run {argv[0]}: {exc}", "") from exc
        try:
            child.wait_ready(self.start_timeout, abort)
        except BaseException:
            child.kill()
            raise
        return child

    def _supervise(self) -> None:
        backoff = Backoff()
        while True:
            with self._lock:
                child = self._child
            if child is None:
                return
            returncode = child.process.wait()
            if self._stopping.is_set():
                return
            self._restarting(child.process.pid, returncode)
            child.stop(0)  # reap it and close its pipes
            backoff.crashed(time.monotonic() - child.started)
            while True:
                if self._stopping.wait(backoff.delay()):
                    return
                try:
                    new = self._launch(restart=True, abort=self._stopping)
                except GatewayError as exc:
                    log.warning("restart failed, will retry: %s", exc)
                    continue
                break
            with self._lock:
                stale = new if self._stopping.is_set() else None
                if stale is None:
                    self._child = new
            if stale is not None:
                stale.stop(self.stop_grace)
                return
            self._restarted(new.process.pid)

    def _stop_at_exit(self) -> None:
        self.stop()

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
