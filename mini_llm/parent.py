"""Parent-death watch: a gateway spawned by the SDK shuts itself down when its parent is gone."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping

from .contract import PARENT_PID_VARIABLE

log = logging.getLogger("mini_llm")

POLL_S = 0.5


def parent_pid(env: Mapping[str, str]) -> int | None:
    """The pid in $MINI_LLM_PARENT_PID, or None when it is unset or not a usable pid."""
    try:
        pid = int(env.get(PARENT_PID_VARIABLE, "").strip())
    except ValueError:
        return None
    # pid 1 is init: it never dies, and "reparented to 1" is how we detect a death.
    return pid if pid > 1 else None


def parent_gone(pid: int, first_ppid: int) -> bool:
    """Whether process `pid` has died; `first_ppid` is our parent when the watch began."""
    if first_ppid == pid:
        # Our own parent: when it dies we are reparented (to init or a subreaper). This
        # cannot be fooled by the pid being reused, unlike a liveness probe.
        return os.getppid() != pid
    # Spawned through an intermediate (a launcher script that forks): probe the pid itself.
    return not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    # A dead process whose own parent has not reaped it yet still answers kill(pid, 0).
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            stat = stat_file.read()
    except OSError:
        return False  # no procfs (macOS) or already gone: the kill probe decides
    # The state letter follows the command name in parentheses, which may contain ") ".
    end = stat.rfind(b")")
    return stat[end + 2 : end + 3] == b"Z"


async def watch_parent(pid: int | None, stop: asyncio.Event, interval: float = POLL_S) -> None:
    """Set `stop` once process `pid` is gone; return when `stop` is set (None: return at once)."""
    if pid is None:
        return
    first_ppid = os.getppid()
    while not stop.is_set():
        if parent_gone(pid, first_ppid):
            log.warning("parent process %d is gone: shutting down", pid)
            stop.set()
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
