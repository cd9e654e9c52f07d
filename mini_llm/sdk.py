"""Gateway / AsyncGateway: run `mini-llm serve` as a supervised child of a parent application."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import signal
import site
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Generic, NamedTuple, Protocol, TypeVar

if TYPE_CHECKING:
    # asyncio is imported inside AsyncGateway only: it costs ~40 ms and `import mini_llm`
    # (check-config, a sync parent) should not pay for it.
    import asyncio
    from types import TracebackType

log = logging.getLogger("mini_llm.sdk")
child_log = logging.getLogger("mini_llm.child")

LISTENING = re.compile(r"mini-llm listening on http://(?P<host>\[[^\]]*\]|[^\s:/]+):(?P<port>\d+)")
# `FILE:LINE:COL: message` as check-config prints it; the child's log lines start "mini-llm ".
PROBLEM = re.compile(r"(?!mini-llm[ :]).+?:\d+:\d+: .*")
LOG_LINE = re.compile(r"mini-llm (?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL): (?P<message>.*)")
_LEVELS = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "CRITICAL": logging.CRITICAL,
}
PARENT_PID_VARIABLE = "MINI_LLM_PARENT_PID"  # read by mini_llm.parent in the child

TAIL_LINES = 200
MAX_LINE_BYTES = 64 * 1024
READ_BYTES = 64 * 1024
POLL_S = 0.02
KILL_WAIT_S = 5.0
BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 5.0
STABLE_S = 10.0  # a child that ran this long before dying is restarted without backoff
# A child bound to a wildcard address is reached, and advertised, through loopback.
_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


class GatewayError(Exception):
    """The gateway child could not be started or supervised."""


class GatewayConfigError(GatewayError):
    """The routing table is invalid; `problems` are the child's `FILE:LINE:COL: ...` lines."""

    def __init__(self, problems: list[str], output_tail: str) -> None:
        self.problems = problems
        self.output_tail = output_tail
        super().__init__("mini-llm: invalid routing table:\n" + "\n".join(problems))


class GatewayStartError(GatewayError):
    """The child exited before listening or was not healthy in time; `output_tail` says why."""

    def __init__(self, reason: str, output_tail: str, returncode: int | None = None) -> None:
        self.reason = reason
        self.output_tail = output_tail
        self.returncode = returncode
        shown = f"\n--- last output of mini-llm serve ---\n{output_tail}" if output_tail else ""
        super().__init__(f"mini-llm: {reason}{shown}")


class _Spec(NamedTuple):
    """How to launch the child: argv and environment, the same for every (re)start."""

    config: str | None
    host: str | None
    port: int | None
    env: Mapping[str, str]
    python: str
    log_requests: bool
    reload: bool | None

    def argv(self, port: int | None) -> list[str]:
        argv = [self.python, "-m", "mini_llm", "serve"]
        if self.config is not None:
            argv += ["-c", self.config]
        if self.host is not None:
            argv += ["--host", self.host]
        if port is not None:
            argv += ["--port", str(port)]
        if self.log_requests:
            argv.append("--log-requests")
        if self.reload is False:
            argv.append("--no-reload")
        return argv

    def environ(self, *, restart: bool) -> dict[str, str]:
        env = {**os.environ, **self.env, PARENT_PID_VARIABLE: str(os.getpid())}
        if restart:
            # A restart must come back on the port `url` names, never quietly on the next one;
            # if that port is taken the supervisor retries with backoff instead.
            env["MINI_LLM_PORT_RETRIES"] = "0"
        root = _import_root() if self.python == sys.executable else None
        if root is not None:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        return env


def _import_root() -> str | None:
    """The folder this mini_llm came from, when `python -m mini_llm` alone may not find it."""
    # A checkout or a vendored copy is not on the child's default path; an installed package
    # is, and putting site-packages on PYTHONPATH would reorder it ahead of the stdlib.
    root = Path(__file__).resolve().parent.parent
    installed = [*getattr(site, "getsitepackages", list)(), site.getusersitepackages()]
    return None if any(root == Path(p).resolve() for p in installed) else str(root)


def _address(match: re.Match[str]) -> tuple[str, int]:
    host = match["host"].strip("[]")
    return _LOOPBACK.get(host, host), int(match["port"])


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _Output:
    """One child's output: the listening line, a bounded tail for errors, stderr relayed."""

    def __init__(self) -> None:
        self.address: tuple[str, int] | None = None
        self._tail: deque[str] = deque(maxlen=TAIL_LINES)
        self._partial = {"stdout": b"", "stderr": b""}
        self._lock = threading.Lock()  # the sync Gateway feeds it from two reader threads

    def feed(self, stream: str, data: bytes) -> bool:
        """Take a chunk of `stream` (b"" at its end); True once the child is listening."""
        with self._lock:
            *lines, rest = (self._partial[stream] + data).split(b"\n")
            if rest and (not data or len(rest) > MAX_LINE_BYTES):
                lines.append(rest)  # the last unterminated line, or one too long to keep
                rest = b""
            self._partial[stream] = rest
            for raw in lines:
                self._line(stream, raw.decode("utf-8", "replace").rstrip("\r"))
            return self.address is not None

    def _line(self, stream: str, line: str) -> None:
        self._tail.append(line)
        if stream == "stdout" and self.address is None:
            match = LISTENING.fullmatch(line)
            if match is not None:
                self.address = _address(match)
                return
        # The parent decides what to show: the child's lines go through its logging.
        parsed = LOG_LINE.fullmatch(line)
        if parsed is not None:
            child_log.log(_LEVELS[parsed["level"]], "%s", parsed["message"])
        else:
            child_log.info("%s", line)

    def tail(self) -> str:
        with self._lock:
            return "\n".join(self._tail)

    def failure(self, reason: str, returncode: int | None) -> GatewayError:
        """The exception for a child that did not come up."""
        tail = self.tail()
        problems = [line for line in tail.splitlines() if PROBLEM.fullmatch(line)]
        if returncode == 1 and problems:
            return GatewayConfigError(problems, tail)
        return GatewayStartError(reason, tail, returncode)


def _health_request(host: str) -> bytes:
    shown = f"[{host}]" if ":" in host else host
    return f"GET /health HTTP/1.1\r\nHost: {shown}\r\nConnection: close\r\n\r\n".encode()


def _status_ok(status_line: bytes) -> bool:
    parts = status_line.split(None, 2)
    return len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1] == b"200"


def _healthy(host: str, port: int, timeout: float) -> bool:
    """One GET /health; plain sockets keep http.client's import cost out of the SDK."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(_health_request(host))
            received = b""
            while b"\r\n" not in received and len(received) < 1024:
                chunk = sock.recv(1024)
                if not chunk:
                    break
                received += chunk
    except OSError:
        return False
    return _status_ok(received.split(b"\r\n", 1)[0])


class _Backoff:
    """Delays between restart attempts: 0.1 s doubling to 5 s, reset after a stable run."""

    def __init__(self) -> None:
        self._next = BACKOFF_FIRST_S

    def crashed(self, lifetime: float) -> None:
        if lifetime >= STABLE_S:
            self._next = BACKOFF_FIRST_S

    def delay(self) -> float:
        delay, self._next = self._next, min(self._next * 2, BACKOFF_MAX_S)
        return delay


# Running gateways, stopped at interpreter exit. Strong references on purpose: a gateway that
# is running is not garbage, like a running thread; stop() removes it.
_RUNNING: set[_Base[Any]] = set()


@atexit.register
def _stop_all() -> None:
    for gateway in list(_RUNNING):
        try:
            gateway._stop_at_exit()
        except Exception:  # one failure must not leave the other children running
            log.exception("could not stop %r at exit", gateway)


def _terminate_pid(pid: int, grace: float) -> None:
    """SIGTERM, then SIGKILL after `grace`, for a child whose event loop is gone."""
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
            time.sleep(POLL_S)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass  # already gone, or reaped by asyncio's child watcher


class _Running(Protocol):
    """What the shared code needs of a child, sync or async."""

    output: _Output
    started: float

    @property
    def pid(self) -> int: ...


ChildT = TypeVar("ChildT", bound=_Running)


class _Base(Generic[ChildT]):
    """Settings, addressing and restart policy shared by Gateway and AsyncGateway."""

    def __init__(
        self,
        config: str | os.PathLike[str] | None = None,
        port: int | None = 3333,
        host: str | None = "127.0.0.1",
        env: Mapping[str, str] | None = None,
        *,
        restart_on_crash: bool = False,
        start_timeout: float = 10.0,
        stop_grace: float = 5.0,
        python: str = sys.executable,
        log_requests: bool = False,
        reload: bool | None = None,
    ) -> None:
        if start_timeout <= 0 or stop_grace < 0:
            raise ValueError("start_timeout must be > 0 and stop_grace >= 0")
        if not python:
            raise GatewayError("no Python interpreter to run mini-llm with (sys.executable)")
        self._spec = _Spec(
            None if config is None else os.fspath(config),
            host,
            port,
            dict(env or {}),  # a copy: later changes by the caller do not leak into restarts
            python,
            log_requests,
            reload,
        )
        self.restart_on_crash = restart_on_crash
        self.start_timeout = start_timeout
        self.stop_grace = stop_grace
        self.restarts = 0  # how many times a crashed child was replaced
        self._address: tuple[str, int] | None = None
        self._child: ChildT | None = None
        self._setup()

    def _setup(self) -> None:
        """Per-flavour state (threads or tasks); called at the end of __init__."""

    @property
    def host(self) -> str:
        """The address the child listens on (loopback for a wildcard bind)."""
        if self._address is not None:
            return self._address[0]
        return _LOOPBACK.get(self._spec.host or "", self._spec.host or "127.0.0.1")

    @property
    def port(self) -> int | None:
        """The real port once started (so `port=0` resolves); before, the one asked for."""
        return self._address[1] if self._address is not None else self._spec.port

    @property
    def url(self) -> str:
        """`http://HOST:PORT`, the base URL clients use; it stays valid across restarts."""
        if self._address is None:
            raise GatewayError("the gateway has not been started")
        return _url(*self._address)

    def _spawn_args(self, *, restart: bool) -> tuple[list[str], dict[str, str]]:
        # The first start asks for the configured port (which may move or be 0); a restart
        # asks for exactly the port the first child got.
        port = self.port if restart else self._spec.port
        return self._spec.argv(port), self._spec.environ(restart=restart)

    def _restarting(self, pid: int, returncode: int | None) -> None:
        log.warning(
            "mini-llm serve (pid %d) exited unexpectedly with code %s; restarting on %s",
            pid,
            returncode,
            self.url,
        )

    def _restarted(self, pid: int) -> None:
        self.restarts += 1
        log.info("mini-llm serve restarted (pid %d) on %s", pid, self.url)

    @property
    def output_tail(self) -> str:
        """The last lines the current child printed."""
        return self._child.output.tail() if self._child is not None else ""

    def _stop_at_exit(self) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        where = self.url if self._address is not None else "not started"
        child = self._child
        state = f"pid={child.pid}" if child is not None else "stopped"
        return f"<{type(self).__name__} {where} {state}>"


class _Child:
    """A running `mini-llm serve` whose pipes two threads drain, so it never blocks on them."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.output = _Output()
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
            self._check(deadline, abort, f"listened on {_url(*address)} but /health is not 200")
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


class Gateway(_Base[_Child]):
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
            _RUNNING.add(self)
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
        _RUNNING.discard(self)

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
        backoff = _Backoff()
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


class _AsyncChild:
    """A running `mini-llm serve` whose pipes two tasks drain."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        import asyncio

        self.process = process
        self.output = _Output()
        self.started = time.monotonic()
        self.ready = asyncio.Event()  # the listening line was seen, or stdout closed
        streams = {"stdout": process.stdout, "stderr": process.stderr}
        self._readers = [
            asyncio.create_task(self._drain(name, stream))
            for name, stream in streams.items()
            if stream is not None
        ]

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    async def spawn(cls, argv: list[str], env: dict[str, str]) -> _AsyncChild:
        import asyncio

        process = await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # see _Child
        )
        return cls(process)

    async def _drain(self, name: str, stream: asyncio.StreamReader) -> None:
        try:
            while data := await stream.read(READ_BYTES):
                if self.output.feed(name, data):
                    self.ready.set()
        finally:
            self.output.feed(name, b"")
            if name == "stdout":
                self.ready.set()

    async def wait_ready(self, timeout: float) -> tuple[str, int]:
        """The address from the listening line, then a healthy /health; or raise."""
        import asyncio

        deadline = self.started + timeout
        try:
            await asyncio.wait_for(self.ready.wait(), deadline - time.monotonic())
        except asyncio.TimeoutError:
            raise await self._timed_out(deadline, "printed no listening line") from None
        address = self.output.address
        if address is None:
            raise await self._failed(deadline, "exited before listening")
        while not await _healthy_async(*address, timeout=max(POLL_S, deadline - time.monotonic())):
            if self.process.returncode is not None:
                raise await self._failed(deadline, "exited before /health answered")
            if time.monotonic() >= deadline:
                what = f"listened on {_url(*address)} but /health is not 200"
                raise await self._timed_out(deadline, what)
            await asyncio.sleep(POLL_S)
        return address

    async def _timed_out(self, deadline: float, what: str) -> GatewayError:
        await self.kill()
        timeout = deadline - self.started
        return self.output.failure(f"mini-llm serve {what} within {timeout:g}s", None)

    async def _failed(self, deadline: float, what: str) -> GatewayError:
        import asyncio

        try:
            code: int | None = await asyncio.wait_for(
                self.process.wait(), max(0.1, deadline - time.monotonic())
            )
        except asyncio.TimeoutError:
            code = None
        await self.kill()
        return self.output.failure(f"mini-llm serve {what} (exit code {code})", code)

    async def stop(self, grace: float) -> None:
        """SIGTERM, then SIGKILL after `grace` (at once for 0); reap it, read its pipes out."""
        import asyncio

        # ProcessLookupError: it exited before asyncio noticed; the wait below collects it.
        if grace > 0 and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), grace)
            except asyncio.TimeoutError:
                log.warning("mini-llm serve (pid %d) ignored SIGTERM: killing", self.process.pid)
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        try:
            await asyncio.wait_for(self.process.wait(), KILL_WAIT_S)
            await asyncio.wait_for(asyncio.gather(*self._readers), KILL_WAIT_S)
        except asyncio.TimeoutError:
            log.error("mini-llm serve (pid %d) did not go away", self.process.pid)

    async def kill(self) -> None:
        await self.stop(0)


async def _healthy_async(host: str, port: int, timeout: float) -> bool:
    """One GET /health over asyncio streams."""
    import asyncio

    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, asyncio.TimeoutError):
        return False
    try:
        writer.write(_health_request(host))
        return _status_ok(await asyncio.wait_for(reader.readline(), timeout))
    except (OSError, asyncio.TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


class AsyncGateway(_Base[_AsyncChild]):
    """Gateway for asyncio parents: `async with AsyncGateway(...) as gw: use(gw.url)`."""

    def _setup(self) -> None:
        self._supervisor: asyncio.Task[None] | None = None

    @property
    def process(self) -> asyncio.subprocess.Process:
        """The current child (after a restart, the new one)."""
        if self._child is None:
            raise GatewayError("the gateway is not running")
        return self._child.process

    async def start(self) -> AsyncGateway:
        """Spawn the child and return once /health answers; raise GatewayError otherwise."""
        import asyncio

        if self._child is not None:
            return self
        child = await self._launch(restart=False)
        self._child, self._address = child, child.output.address
        _RUNNING.add(self)
        if self.restart_on_crash:
            self._supervisor = asyncio.create_task(self._supervise())
        return self

    async def stop(self) -> None:
        """Stop the child (SIGTERM, SIGKILL after `stop_grace`); no restart follows."""
        import asyncio

        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            # First, so it does not restart what we stop; a launch it had under way is
            # killed by _launch's cleanup.
            supervisor.cancel()
            await asyncio.gather(supervisor, return_exceptions=True)
        child, self._child = self._child, None
        if child is not None:
            await child.stop(self.stop_grace)
        _RUNNING.discard(self)

    async def _launch(self, *, restart: bool) -> _AsyncChild:
        argv, env = self._spawn_args(restart=restart)
        try:
            child = await _AsyncChild.spawn(argv, env)
        except OSError as exc:
            raise GatewayStartError(f"cannot run {argv[0]}: {exc}", "") from exc
        try:
            await child.wait_ready(self.start_timeout)
        except BaseException:
            await child.kill()
            raise
        return child

    async def _supervise(self) -> None:
        import asyncio

        backoff = _Backoff()
        while self._child is not None:
            child = self._child
            returncode = await child.process.wait()
            self._restarting(child.process.pid, returncode)
            await child.stop(0)
            backoff.crashed(time.monotonic() - child.started)
            while True:
                await asyncio.sleep(backoff.delay())
                try:
                    self._child = await self._launch(restart=True)
                except GatewayError as exc:
                    log.warning("restart failed, will retry: %s", exc)
                    continue
                break
            self._restarted(self._child.process.pid)

    def _stop_at_exit(self) -> None:
        # The event loop is gone at interpreter exit: signal and reap the pid directly.
        if self._child is not None and self._child.process.returncode is None:
            _terminate_pid(self._child.process.pid, self.stop_grace)
        _RUNNING.discard(self)

    async def __aenter__(self) -> AsyncGateway:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()
