"""`serve --workers N`: N gateway processes on one port (SO_REUSEPORT), supervised."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Mapping, Sequence

from .contract import (
    EXIT_CANNOT_BIND,
    EXIT_INTERNAL,
    EXIT_INVALID,
    EXIT_OK,
    PARENT_PID_VARIABLE,
    WORKER_VARIABLE,
    listening_line,
    parse_listening_line,
)
from .metrics_dir import shared_folder, worker_gone

log = logging.getLogger("mini_llm")

_RESTART_BACKOFF_S = (0.5, 5.0)


class Worker:
    """One child `mini-llm serve` bound to the shared port, restarted if it dies."""

    def __init__(self, index: int, argv: Sequence[str], env: Mapping[str, str]) -> None:
        self.index = index
        self.argv = list(argv)
        self.env = dict(env)
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> tuple[str, int] | None:
        """Start the child; the address it listens on, or None when it exited first."""
        self.process = await asyncio.create_subprocess_exec(
            *self.argv,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL,
        )
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            address = parse_listening_line(line.decode(errors="replace"))
            if address is not None:
                return address
        await self.process.wait()
        return None

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signum)


def failure_code(returncode: int | None) -> int:
    """The supervisor's exit code for a worker that exited with `returncode` before listening."""
    # A worker's own reasons (a table that became invalid, a port it could not bind, a bug)
    # are passed on. Anything else is ours: the argv we built was refused (2), or it was
    # killed by a signal or exited 0 before listening.
    if returncode in (EXIT_INVALID, EXIT_CANNOT_BIND, EXIT_INTERNAL):
        return returncode
    return EXIT_INTERNAL


async def supervise(
    sock: socket.socket, argv: Sequence[str], workers: int, env: Mapping[str, str], grace_s: float
) -> int:
    """Run the workers until SIGTERM/SIGINT; forward SIGHUP; restart any that crash.

    `argv` is the workers' command line, which names the port `sock` holds.
    """
    with shared_folder(env) as env_with_metrics:  # one scrape covers every worker
        return await _supervise(sock, argv, workers, env_with_metrics, grace_s)


async def _supervise(
    sock: socket.socket, argv: Sequence[str], workers: int, env: Mapping[str, str], grace_s: float
) -> int:
    child_env = {**env, WORKER_VARIABLE: "1", PARENT_PID_VARIABLE: str(os.getpid())}
    pool = [Worker(i, argv, child_env) for i in range(workers)]
    addresses = await asyncio.gather(*(w.start() for w in pool))
    listening = [address for address in addresses if address is not None]
    if len(listening) < len(pool):
        for worker in pool:
            worker.signal(signal.SIGTERM)
        await asyncio.gather(*(w.process.wait() for w in pool if w.process is not None))
        failed = pool[addresses.index(None)]
        returncode = failed.process.returncode if failed.process is not None else None
        print(
            f"mini-llm: worker {failed.index} exited with {returncode} before listening;"
            " see its errors above",
            file=sys.stderr,
        )
        return failure_code(returncode)
    print(listening_line(*listening[0]), flush=True)

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)

    def forward_hangup() -> None:
        for worker in pool:
            worker.signal(signal.SIGHUP)

    loop.add_signal_handler(signal.SIGHUP, forward_hangup)
    keepers = [asyncio.create_task(_keep_alive(w, stopping)) for w in pool]
    await stopping.wait()
    for worker in pool:
        worker.signal(signal.SIGTERM)
    done = asyncio.gather(*keepers)
    try:
        await asyncio.wait_for(done, grace_s + 5)
    except asyncio.TimeoutError:
        for worker in pool:
            worker.signal(signal.SIGKILL)
    sock.close()
    return EXIT_OK


async def _keep_alive(worker: Worker, stopping: asyncio.Event) -> None:
    backoff = _RESTART_BACKOFF_S[0]
    while True:
        assert worker.process is not None
        code = await worker.process.wait()
        worker_gone(worker.env, worker.process.pid)
        if stopping.is_set():
            return
        log.error("worker %d exited with %d; restarting in %gs", worker.index, code, backoff)
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, _RESTART_BACKOFF_S[1])
        if stopping.is_set():
            return
        await worker.start()
