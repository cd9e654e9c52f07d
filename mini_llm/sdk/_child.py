"""What Gateway and AsyncGateway share: how to launch, reading output, health, restarts."""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import site
import sys
import threading
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

from ..contract import (
    EXIT_INVALID,
    EXIT_MEANINGS,
    PARENT_PID_VARIABLE,
    http_url,
    parse_listening_line,
    serve_argv,
)
from ..signing import sign_request
from .errors import GatewayConfigError, GatewayError, GatewayStartError

log = logging.getLogger("mini_llm.sdk")
child_log = logging.getLogger("mini_llm.child")

# `FILE:LINE:COL: message` as check-config prints it; the child's log lines start "mini-llm ".
PROBLEM = re.compile(r"(?!mini-llm[ :]).+?:\d+:\d+: .*")
# What the child says for itself before it exits: `mini-llm: cannot listen on ...`.
SAID = re.compile(r"mini-llm: (?P<message>.*)")
LOG_LINE = re.compile(r"mini-llm (?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL): (?P<message>.*)")
_LEVELS = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "CRITICAL": logging.CRITICAL,
}
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


SIGNING_OVERRIDE = "MINI_LLM__SERVER__AUTH__HMAC_SECRET"


class Spec(NamedTuple):
    """How to launch the child: argv and environment, the same for every (re)start."""

    config: str | None
    host: str | None
    port: int | None
    env: Mapping[str, str]
    python: str
    log_requests: bool
    reload: bool | None

    def argv(self, port: int | None) -> list[str]:
        return serve_argv(
            python=self.python,
            config=self.config,
            host=self.host,
            port=port,
            log_requests=self.log_requests,
            reload=self.reload,
        )

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
    root = Path(__file__).resolve().parents[2]  # mini_llm/sdk/_child.py -> the import root
    installed = [*getattr(site, "getsitepackages", list)(), site.getusersitepackages()]
    return None if any(root == Path(p).resolve() for p in installed) else str(root)


class Output:
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
            address = parse_listening_line(line)
            if address is not None:
                host, port = address
                self.address = _LOOPBACK.get(host, host), port
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
        """The exception for a child that did not come up, told apart by its exit code."""
        tail = self.tail()
        lines = tail.splitlines()
        said = [m["message"] for m in map(SAID.fullmatch, lines) if m is not None]
        if returncode == EXIT_INVALID:
            # The table's `FILE:LINE:COL: ...` lines; a refusal without any names itself.
            problems = [line for line in lines if PROBLEM.fullmatch(line)]
            return GatewayConfigError(problems or said or [reason], tail)
        meaning = EXIT_MEANINGS.get(returncode) if returncode else None
        if meaning is not None:
            reason = f"{reason}: {meaning}" + (f": {said[-1]}" if said else "")
        return GatewayStartError(reason, tail, returncode)


def health_request(host: str) -> bytes:
    shown = f"[{host}]" if ":" in host else host
    return f"GET /health HTTP/1.1\r\nHost: {shown}\r\nConnection: close\r\n\r\n".encode()


def status_ok(status_line: bytes) -> bool:
    parts = status_line.split(None, 2)
    return len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1] == b"200"


class Backoff:
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
RUNNING: set[Base[Any]] = set()


@atexit.register
def _stop_all() -> None:
    for gateway in list(RUNNING):
        try:
            gateway._stop_at_exit()
        except Exception:  # one failure must not leave the other children running
            log.exception("could not stop %r at exit", gateway)


class _Running(Protocol):
    """What the shared code needs of a child, sync or async."""

    output: Output
    started: float

    @property
    def pid(self) -> int: ...


ChildT = TypeVar("ChildT", bound=_Running)


class Base(Generic[ChildT]):
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
        hmac_secret: str | None = None,
    ) -> None:
        if start_timeout <= 0 or stop_grace < 0:
            raise ValueError("start_timeout must be > 0 and stop_grace >= 0")
        if not python:
            raise GatewayError("no Python interpreter to run mini-llm with (sys.executable)")
        child_env = dict(env or {})  # a copy: later changes by the caller do not leak
        if hmac_secret:
            # The child then refuses unsigned requests; the override is a quoted YAML string.
            child_env[SIGNING_OVERRIDE] = json.dumps(hmac_secret)
        self._hmac_secret = hmac_secret
        self._spec = Spec(
            None if config is None else os.fspath(config),
            host,
            port,
            child_env,
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

    def sign(self, method: str, path: str, body: bytes) -> dict[str, str]:
        """The x-timestamp and x-signature headers for one request (needs `hmac_secret`)."""
        if not self._hmac_secret:
            raise GatewayError("Gateway(hmac_secret=...) is needed to sign requests")
        return sign_request(self._hmac_secret, method, path, body)

    @property
    def url(self) -> str:
        """`http://HOST:PORT`, the base URL clients use; it stays valid across restarts."""
        if self._address is None:
            raise GatewayError("the gateway has not been started")
        return http_url(*self._address)

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
