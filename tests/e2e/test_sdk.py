"""The Python SDK against real `mini-llm serve` children: start, stop, restart, no orphans.

Each behaviour is asserted once and runs twice, against Gateway and AsyncGateway (`flavour`).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

import mini_llm
from mini_llm.contract import EXIT_CANNOT_BIND, EXIT_INTERNAL, EXIT_INVALID, EXIT_OK
from mini_llm.parent import watch_parent
from mini_llm.sdk import (
    AsyncGateway,
    Gateway,
    GatewayConfigError,
    GatewayError,
    GatewayStartError,
)
from mini_llm.sdk._child import Output, Spec, _import_root

CONFIG = """\
version: 1
providers:
  local:
    base_url: http://127.0.0.1:9/v1   # never contacted
    auth: none
routes:
  aliases:
    fast: local:tiny
  default: local
"""

# Line 5, column 11 is the value of `auth`.
INVALID = """\
version: 1
providers:
  local:
    base_url: http://127.0.0.1:9/v1
    auth: bogus
routes:
  default: local
"""

# Parent applications for the no-orphan tests: start a gateway of the flavour argv[3] names,
# publish its pid, then end in the way argv[4] says.
PARENT = """\
import asyncio, os, sys, time
from mini_llm import sdk

config, pid_file, flavour, ending = sys.argv[1:5]

def publish(pid):
    with open(pid_file + ".tmp", "w") as f:
        f.write(str(pid))
    os.replace(pid_file + ".tmp", pid_file)  # the test never reads half a pid

if flavour == "async":
    loop = asyncio.new_event_loop()  # never closed: only atexit can stop the child
    gateway = loop.run_until_complete(sdk.AsyncGateway(config, port=0).start())
else:
    gateway = sdk.Gateway(config, port=0).start()
publish(gateway.process.pid)
if ending == "os._exit":
    os._exit(0)  # no atexit, no cleanup: only the child's parent watch can notice
if ending == "wait-for-kill":
    time.sleep(60)  # the test SIGKILLs us long before this ends
# "exit": a normal interpreter exit with the gateway still running.
"""


# Variables from the developer's shell that would change what a child does.
_SCRUBBED = ("MINI_LLM", "OPENAI_", "ANTHROPIC_", "NEBIUS_", "DEEPINFRA_", "CUSTOM_PROVIDER")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Children inherit os.environ (that is the contract), so start from a known one."""
    for name in list(os.environ):
        if name.startswith(_SCRUBBED):
            monkeypatch.delenv(name)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "mini-llm.yaml"
    path.write_text(CONFIG)
    return path


class Flavour:
    """Makes a Gateway or an AsyncGateway and drives either through blocking calls.

    AsyncGateway runs on an event loop in a thread of its own, so one test body serves both.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._made: list[Driven] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        if name == "async":
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
            self._thread.start()

    def __call__(self, *args: Any, **kwargs: Any) -> Driven:
        kind = Gateway if self._loop is None else AsyncGateway
        driven = Driven(kind(*args, **kwargs), self)
        self._made.append(driven)
        return driven

    def wait(self, result: Any) -> Any:
        """The result of a Gateway call, or of an AsyncGateway coroutine run on the loop."""
        if self._loop is None:
            return result
        return asyncio.run_coroutine_threadsafe(result, self._loop).result(60)

    def close(self) -> None:
        for driven in self._made:
            driven.stop()  # a test that failed half-way leaves no child behind
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()


class Driven:
    """One gateway of either flavour: start/stop block; everything else is the gateway's."""

    def __init__(self, gateway: Gateway | AsyncGateway, flavour: Flavour) -> None:
        self.gateway = gateway
        self._flavour = flavour

    def start(self) -> Gateway | AsyncGateway:
        return self._flavour.wait(self.gateway.start())  # type: ignore[no-any-return]

    def stop(self) -> None:
        self._flavour.wait(self.gateway.stop())

    def __getattr__(self, name: str) -> Any:
        return getattr(self.gateway, name)  # url, port, process, restarts, ...

    def __enter__(self) -> Driven:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


@pytest.fixture(params=["sync", "async"])
def flavour(request: pytest.FixtureRequest) -> Iterator[Flavour]:
    made = Flavour(request.param)
    yield made
    made.close()


def exit_code(process: subprocess.Popen[bytes] | asyncio.subprocess.Process) -> int | None:
    """The child's exit code, None while it runs, whichever flavour started it."""
    return process.poll() if isinstance(process, subprocess.Popen) else process.returncode


def get_json(url: str) -> tuple[int, Any]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, json.load(response)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting until {what}")
        time.sleep(0.01)


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process from /proc, or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The fields after the command name, which is in parentheses and may contain spaces.
    state, ppid = stat[stat.rfind(b")") + 2 :].split()[:2]
    return state.decode(), int(ppid)


def running(pid: int) -> bool:
    """Whether pid is a live process (a zombie nobody reaped yet counts as dead)."""
    stat = proc_stat(pid)
    return stat is not None and stat[0] != "Z"


def our_gateways() -> set[int]:
    """Pids of live `mini_llm serve` processes whose parent is this test process."""
    pids = set()
    for entry in Path("/proc").glob("[0-9]*"):
        stat = proc_stat(int(entry.name))
        if stat is None or stat[1] != os.getpid() or not running(int(entry.name)):
            continue
        try:
            if b"mini_llm\0serve" in (entry / "cmdline").read_bytes():
                pids.add(int(entry.name))
        except OSError:
            continue  # exited while we looked
    return pids


def python_env() -> dict[str, str]:
    """The environment for a parent script: it must import this very mini_llm."""
    root = str(Path(mini_llm.__file__).resolve().parent.parent)
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
    }


# --- pure helpers ----------------------------------------------------------------------------


def test_output_finds_the_listening_line_across_chunks() -> None:
    output = Output()
    assert not output.feed("stdout", b"mini-llm listening on http://[::]:40")
    assert output.feed("stdout", b"01\n")
    assert output.address == ("::1", 4001)  # a wildcard bind is reached through loopback
    output.feed("stderr", b"no newline at the end")
    output.feed("stderr", b"")
    assert output.tail().splitlines()[-1] == "no newline at the end"


def test_output_failure_follows_the_exit_code() -> None:
    output = Output()
    output.feed("stderr", b"x.yaml:5:11: bad (at /a)\nmini-llm: x.yaml: 1 error(s); not started\n")
    error = output.failure("exited", EXIT_INVALID)
    assert isinstance(error, GatewayConfigError)
    assert error.problems == ["x.yaml:5:11: bad (at /a)"]
    refusal = Output()
    refusal.feed("stderr", b"mini-llm INFO: starting\nmini-llm: refusing to serve on 0.0.0.0\n")
    refused = refusal.failure("exited", EXIT_INVALID)
    assert isinstance(refused, GatewayConfigError)
    assert refused.problems == ["refusing to serve on 0.0.0.0"]  # it names itself
    other = Output()
    other.feed("stderr", b"mini-llm: cannot listen on h (any port): denied\n")
    start_error = other.failure("exited", EXIT_CANNOT_BIND)
    assert isinstance(start_error, GatewayStartError)
    assert start_error.reason == "exited: cannot bind a port: cannot listen on h (any port): denied"
    assert "cannot listen" in start_error.output_tail
    crash = Output()
    crash.feed("stderr", b"mini-llm ERROR: internal error; please report it\nTraceback (most\n")
    internal = crash.failure("exited", EXIT_INTERNAL)
    assert isinstance(internal, GatewayStartError)
    assert (internal.reason, internal.returncode) == ("exited: internal error", EXIT_INTERNAL)
    assert "Traceback" in internal.output_tail
    unknown = Output().failure("exited", 7)
    assert isinstance(unknown, GatewayStartError)
    assert unknown.reason == "exited"  # not one of ours: no meaning guessed


def test_spec_builds_argv_and_the_restart_environment() -> None:
    spec = Spec("t.yaml", "127.0.0.1", 0, {"K": "v"}, "py", log_requests=True, reload=False)
    assert spec.argv(0) == [
        "py", "-m", "mini_llm", "serve", "-c", "t.yaml", "--host", "127.0.0.1",
        "--port", "0", "--log-requests", "--no-reload",
    ]  # fmt: skip
    first = spec.environ(restart=False)
    assert first["K"] == "v"
    assert first["MINI_LLM_PARENT_PID"] == str(os.getpid())
    assert "MINI_LLM_PORT_RETRIES" not in first
    assert spec.environ(restart=True)["MINI_LLM_PORT_RETRIES"] == "0"
    # The folder that holds this mini_llm, unless it is installed (then the child finds it).
    assert _import_root() in (None, str(Path(mini_llm.__file__).resolve().parent.parent))


async def test_watch_parent_stops_when_the_pid_is_gone() -> None:
    stop = asyncio.Event()
    await watch_parent(None, stop)  # not spawned by the SDK: nothing to watch
    assert not stop.is_set()
    dead = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await dead.wait()  # reaped: its pid is gone
    await asyncio.wait_for(watch_parent(dead.pid, stop, interval=0.01), 5)
    assert stop.is_set()


# --- real children ---------------------------------------------------------------------------


def test_the_sdk_loads_neither_aiohttp_nor_the_gateway() -> None:
    script = (
        "import mini_llm.sdk, sys\n"
        "from mini_llm import AsyncGateway, Gateway\n"
        "loaded = [m for m in ('aiohttp', 'mini_llm.proxy', 'mini_llm.app', 'mini_llm.server')"
        " if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=python_env(), capture_output=True, timeout=30
    )
    assert done.returncode == 0, done.stderr.decode()


def test_start_serves_and_stop_ends_the_child(flavour: Flavour, config: Path) -> None:
    gateway = flavour(config, port=0)
    with pytest.raises(GatewayError):
        gateway.url  # noqa: B018 - not started yet
    with gateway as gw:
        assert gw.start() is gw.gateway  # already running: a no-op
        assert gw.url == f"http://127.0.0.1:{gw.port}"
        status, body = get_json(gw.url + "/health")
        assert (status, body["status"]) == (200, "ok")
        process = gw.process
        assert exit_code(process) is None
    assert process.returncode == EXIT_OK  # SIGTERM drains and exits cleanly
    gateway.stop()  # stopping twice is harmless
    with pytest.raises(GatewayError):
        gateway.process  # noqa: B018


def test_port_zero_and_a_busy_port_use_the_port_actually_bound(
    flavour: Flavour, config: Path
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        with flavour(config, port=taken) as gw:
            assert taken < gw.port <= taken + 10  # moved on, and url says where
            assert get_json(gw.url + "/health")[0] == 200


def test_env_is_added_over_the_parents_environment(
    flavour: Flavour, config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINI_LLM__PROVIDERS__LOCAL__MODELS", "[inherited-model]")
    aliases = json.dumps({"from-parent": "local:big"})
    with flavour(config, port=0, env={"MINI_LLM_MODEL_ALIASES": aliases}) as gw:
        _, models = get_json(gw.url + "/v1/models")
    ids = {model["id"] for model in models["data"]}
    assert {"fast", "from-parent", "inherited-model"} <= ids


def test_invalid_config_raises_with_its_lines(flavour: Flavour, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(INVALID)
    with pytest.raises(GatewayConfigError) as caught:
        flavour(path, port=0).start()
    [problem] = caught.value.problems
    assert problem.startswith(f"{path}:5:11: ")
    assert "/providers/local/auth" in problem
    assert str(path) in str(caught.value)
    assert f"{path}: 1 error(s); not started" in caught.value.output_tail


def test_a_refusal_to_start_raises_a_config_error_in_its_own_words(
    flavour: Flavour, config: Path
) -> None:
    with pytest.raises(GatewayConfigError) as caught:
        flavour(config, host="0.0.0.0", port=0).start()  # off loopback, and no gateway keys
    [problem] = caught.value.problems
    assert problem.startswith("refusing to serve on 0.0.0.0, which is not loopback")
    assert problem.endswith("; not started")


def test_a_taken_port_without_retries_raises_a_start_error(flavour: Flavour, config: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        gateway = flavour(config, port=port, env={"MINI_LLM_PORT_RETRIES": "0"})
        with pytest.raises(GatewayStartError) as caught:
            gateway.start()
    assert caught.value.returncode == EXIT_CANNOT_BIND
    assert caught.value.reason == (
        f"mini-llm serve exited before listening (exit code {EXIT_CANNOT_BIND}): cannot bind a"
        f" port: cannot listen on 127.0.0.1 (ports {port}-{port}): Address already in use"
    )


def test_an_address_that_is_not_ours_raises_a_start_error(flavour: Flavour, config: Path) -> None:
    # 192.0.2.1 (TEST-NET-1) is nobody's address: the bind fails after the config loaded.
    anonymous = {"MINI_LLM__SERVER__AUTH__ALLOW_ANONYMOUS": "true"}  # not loopback
    with pytest.raises(GatewayStartError) as caught:
        flavour(config, host="192.0.2.1", port=0, env=anonymous).start()
    assert caught.value.returncode == EXIT_CANNOT_BIND
    assert "cannot bind a port: cannot listen on 192.0.2.1" in caught.value.reason
    assert "cannot listen on 192.0.2.1" in caught.value.output_tail


def fake_python(tmp_path: Path, body: str) -> Path:
    """An executable that stands in for the interpreter: it records its pid, then `body`."""
    fake = tmp_path / "fake-python"
    fake.write_text(f"#!/bin/sh\necho $$ > {tmp_path / 'pid'}\n{body}\n")
    fake.chmod(0o755)
    return fake


@pytest.mark.parametrize(
    ("body", "reason", "said"),
    [
        ("echo 'boom' >&2\nexit 7", "exited before listening (exit code 7)", "boom"),
        ("echo booting\nexec sleep 60", "printed no listening line within 0.5s", "booting"),
    ],
)
def test_start_failures_raise_with_the_output_and_leave_no_child(
    flavour: Flavour, tmp_path: Path, body: str, reason: str, said: str
) -> None:
    fake = fake_python(tmp_path, body)
    with pytest.raises(GatewayStartError) as caught:
        flavour(port=0, python=str(fake), start_timeout=0.5).start()
    assert caught.value.reason == f"mini-llm serve {reason}"
    assert caught.value.output_tail.strip() == said
    assert not running(int((tmp_path / "pid").read_text()))


def test_kill_9_restarts_on_the_same_port(flavour: Flavour, config: Path) -> None:
    with flavour(config, port=0, restart_on_crash=True) as gw:
        url, first = gw.url, gw.process.pid
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: gw.restarts == 1, "the child is restarted")
        assert gw.url == url
        assert gw.process.pid != first
        assert get_json(url + "/health")[0] == 200
        second = gw.process
    assert second.returncode == EXIT_OK  # stop() ended it and did not restart it
    assert gw.restarts == 1


def test_a_restart_waits_for_its_port_rather_than_moving(
    flavour: Flavour, config: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        flavour(config, port=0, restart_on_crash=True) as gw,
        socket.socket() as squatter,
    ):
        os.kill(gw.process.pid, signal.SIGKILL)
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)

        def squat() -> bool:
            try:
                squatter.bind(("127.0.0.1", gw.port))
            except OSError:
                return False
            squatter.listen()
            return True

        # Free once the kernel has closed the dead child's socket; the restart comes later
        # (backoff, then a Python start-up), so we get there first.
        wait_until(squat, "the dead child's port is free", timeout=5)
        wait_until(
            lambda: any("restart failed" in r.getMessage() for r in caplog.records),
            "a restart fails on the taken port",
        )
        assert gw.restarts == 0
        squatter.close()
        wait_until(lambda: gw.restarts == 1, "the restart succeeds once the port is free")
        assert get_json(gw.url + "/health")[0] == 200


def test_stop_during_a_restart_leaves_no_child(flavour: Flavour, config: Path) -> None:
    gw = flavour(config, port=0, restart_on_crash=True)
    gw.start()
    first = gw.process.pid
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: bool(our_gateways() - {first}), "a replacement child is starting")
    gw.stop()
    assert gw.restarts == 0  # stopped before the replacement was healthy
    assert our_gateways() == set()


@pytest.mark.parametrize("ending", ["os._exit", "SIGKILL"])
def test_parent_death_leaves_no_child_behind(
    flavour: Flavour, config: Path, tmp_path: Path, ending: str
) -> None:
    # Needs server.py to run mini_llm.parent.watch_parent ($MINI_LLM_PARENT_PID).
    script, pid_file = tmp_path / "parent.py", tmp_path / "child.pid"
    script.write_text(PARENT)
    mode = "os._exit" if ending == "os._exit" else "wait-for-kill"
    argv = [sys.executable, str(script), str(config), str(pid_file), flavour.name, mode]
    parent = subprocess.Popen(argv, env=python_env(), stderr=subprocess.PIPE)
    try:
        wait_until(lambda: pid_file.exists() or parent.poll() is not None, "the child runs")
        if ending == "SIGKILL":
            parent.kill()
        _, stderr = parent.communicate(timeout=10)
        assert pid_file.exists(), stderr.decode()
        child = int(pid_file.read_text())
        wait_until(lambda: not running(child), "the orphaned child exits", timeout=5)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.communicate()
        if pid_file.exists() and running(int(pid_file.read_text())):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)  # never leave one behind


def test_interpreter_exit_stops_children(flavour: Flavour, config: Path, tmp_path: Path) -> None:
    script, pid_file = tmp_path / "parent.py", tmp_path / "child.pid"
    script.write_text(PARENT)
    argv = [sys.executable, str(script), str(config), str(pid_file), flavour.name, "exit"]
    done = subprocess.run(argv, env=python_env(), capture_output=True, timeout=20, check=False)
    assert done.returncode == 0, done.stderr.decode()
    # At once, no polling: atexit stopped and reaped the child before the parent exited.
    assert not running(int(pid_file.read_text()))


def test_async_gateway_under_asyncio_run(config: Path, tmp_path: Path) -> None:
    # The way an asyncio application runs it: its own loop, closed when main() returns.
    bad = tmp_path / "bad.yaml"
    bad.write_text(INVALID)

    async def main() -> tuple[int, Any, asyncio.subprocess.Process]:
        with pytest.raises(GatewayConfigError) as caught:
            await AsyncGateway(bad, port=0).start()
        assert caught.value.problems[0].startswith(f"{bad}:5:11: ")
        env = {"MINI_LLM_MODEL_ALIASES": json.dumps({"from-parent": "local:big"})}
        async with AsyncGateway(config, port=0, env=env) as gw:
            assert await gw.start() is gw
            status, models = await asyncio.to_thread(get_json, gw.url + "/v1/models")
            return status, models, gw.process

    status, models, process = asyncio.run(main())
    assert status == 200
    assert "from-parent" in {model["id"] for model in models["data"]}
    assert process.returncode == 0


SIGNED_TABLE = """\
version: 1
server: {reload: false}
providers:
  echo: {builtin: echo}
routes: {default: echo}
"""


def test_a_gateway_given_the_secret_requires_and_makes_signatures(
    flavour: Flavour, tmp_path: Path
) -> None:
    path = tmp_path / "signed.yaml"
    path.write_text(SIGNED_TABLE)
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
    with flavour(path, port=0, hmac_secret="parent-secret-123") as gw:

        def post(headers: dict[str, str]) -> int:
            request = urllib.request.Request(
                gw.url + "/v1/chat/completions",
                data=body,
                headers={"Content-Type": "application/json", **headers},
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    return int(response.status)
            except urllib.error.HTTPError as exc:
                return exc.code

        assert post({}) == 401
        assert post(gw.sign("POST", "/v1/chat/completions", body)) == 200
        assert post(mini_llm.sign_request("other", "POST", "/v1/chat/completions", body)) == 401
    with pytest.raises(GatewayError):
        flavour(path, port=0).sign("POST", "/v1/chat/completions", body)
