"""Child processes of the benchmark: spawn pinned, read the listening line, account CPU and RSS."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import resource
import shutil
import signal
import socket
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_URL = re.compile(r"(https?://[\w.\-\[\]]+:\d+)")


class SetupError(Exception):
    """A contender could not be started; the message is the reason shown as `skipped`."""


def pinned(cmd: Sequence[str], cpus: str | None) -> list[str]:
    """Prefix cmd with taskset when a CPU list is given and taskset exists."""
    if cpus is None or shutil.which("taskset") is None:
        return list(cmd)
    return ["taskset", "-c", cpus, *cmd]


def free_port() -> int:
    """A port the OS just handed out, for programs that cannot bind port 0 and tell us."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    """A child process whose output is kept (last lines) for error reports."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc
        self.lines: deque[str] = deque(maxlen=40)
        self._drains: list[asyncio.Task[None]] = []
        self._stdout_lines: asyncio.Queue[str | None] = asyncio.Queue()
        self._waiting = True  # stdout lines are queued only until the listening line is found
        if proc.stdout is not None:
            self._drains.append(asyncio.create_task(self._drain(proc.stdout, self._stdout_lines)))
        if proc.stderr is not None:
            self._drains.append(asyncio.create_task(self._drain(proc.stderr, None)))

    @classmethod
    async def spawn(
        cls,
        name: str,
        cmd: Sequence[str],
        *,
        cpus: str | None,
        env: dict[str, str | None] | None = None,
        cwd: str | None = None,
    ) -> Proc:
        """Start cmd (pinned to cpus); env entries set to None are removed from the child's."""
        full_env = dict(os.environ)
        # Contenders run as installed software does, with bytecode caches (an environment
        # that forbids writing them would make every start recompile every Python module).
        full_env.pop("PYTHONDONTWRITEBYTECODE", None)
        for key, value in (env or {}).items():
            if value is None:
                full_env.pop(key, None)
            else:
                full_env[key] = value
        proc = await asyncio.create_subprocess_exec(
            *pinned(cmd, cpus),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=full_env,
            cwd=cwd,
            # Own process group, so stop() reaches workers and npx/uvicorn grandchildren.
            start_new_session=True,
        )
        return cls(name, proc)

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def _drain(
        self, stream: asyncio.StreamReader, queue: asyncio.Queue[str | None] | None
    ) -> None:
        # Always read both pipes to the end: a child blocked on a full pipe would stall the run.
        while line := await stream.readline():
            text = line.decode("utf-8", "replace").rstrip()
            self.lines.append(text)
            if queue is not None and self._waiting:
                queue.put_nowait(text)
        if queue is not None:
            queue.put_nowait(None)

    async def wait_url(self, pattern: str, timeout: float) -> str:
        """Wait for a stdout line containing pattern and return the http://host:port in it."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                line = await asyncio.wait_for(self._stdout_lines.get(), max(0.0, left))
                if line is None:
                    break
                if pattern in line and (m := _URL.search(line)):
                    self._waiting = False
                    return m.group(1)
        except asyncio.TimeoutError:
            raise SetupError(
                f"{self.name}: no '{pattern}' line within {timeout:.0f}s; {self.tail()}"
            ) from None
        await self.proc.wait()
        raise SetupError(f"{self.name} exited with {self.proc.returncode}; {self.tail()}")

    def tail(self, n: int = 3) -> str:
        last = [line for line in self.lines if line.strip()][-n:]
        return " | ".join(last)[-400:] or "no output"

    async def stop(self, grace: float = 5.0) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), grace)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                await self.proc.wait()
        with contextlib.suppress(ProcessLookupError):
            # Leftover grandchildren (a worker that ignored SIGTERM) must not outlive the run.
            os.killpg(self.proc.pid, signal.SIGKILL)
        for task in self._drains:
            task.cancel()


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def process_tree(pid: int) -> list[int]:
    """pid and all its live descendants (gateway workers, nginx workers, node children)."""
    tree = _children()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(tree.get(p, []))
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of pid's live process tree, from /proc/PID/stat."""
    total = 0
    for p in process_tree(pid):
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
    return total / _CLK_TCK


def rss_bytes(pid: int) -> int:
    """Sum of VmRSS over pid's live process tree."""
    total = 0
    for p in process_tree(pid):
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


def _cpu_times() -> tuple[int, int]:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields[:8]), idle


class ForeignLoad:
    """CPU that processes other than this run's used while it ran, in % of the machine.

    Busy time of all CPUs (from /proc/stat) minus our own: this process and every child it
    has reaped (load generators, gateways and their workers, the mock), read once all are
    stopped.
    """

    def __init__(self) -> None:
        self._start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float]:
        total, idle = _cpu_times()
        ours = sum(
            r.ru_utime + r.ru_stime
            for r in (
                resource.getrusage(resource.RUSAGE_SELF),
                resource.getrusage(resource.RUSAGE_CHILDREN),
            )
        )
        return (total - idle) / _CLK_TCK, total / _CLK_TCK, ours

    def percent(self) -> float:
        busy0, total0, ours0 = self._start
        busy1, total1, ours1 = self._sample()
        capacity = total1 - total0
        foreign = (busy1 - busy0) - (ours1 - ours0)
        return max(0.0, 100.0 * foreign / capacity) if capacity > 0 else 0.0


def busy_percent(seconds: float) -> float:
    """How busy all CPUs of the machine are over `seconds` (blocking; run in a thread)."""
    total0, idle0 = _cpu_times()
    time.sleep(seconds)
    total1, idle1 = _cpu_times()
    spent = total1 - total0
    return 100.0 * (spent - (idle1 - idle0)) / spent if spent else 0.0
