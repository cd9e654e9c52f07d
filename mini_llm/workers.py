"""`serve --workers N`: N gateway processes on one port (SO_REUSEPORT), supervised."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Mapping, Sequence

from .metrics_dir import shared_folder, worker_gone
from .parent import PARENT_PID_VARIABLE

log = logging.getLogger("mini_llm")

WORKER_VARIABLE = "MINI_LLM_WORKER"
LISTENING = "mini-llm listening on "
_RESTART_BACKOFF_S = (0.5, 5.0)


class Worker:
    """One child `mini-llm serve` bound to the shared port, restarted if it dies."""

    def __init__(self, index: int, argv: Sequence[str], env: Mapping[str, str]) -> None:
        self.index = index
        self.argv = list(argv)
        self.env = dict(env)
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> str | None:
        """Start the child; its listening URL, or None when it exited first."""
        self.process = await asyncio.create_subprocess_exec(
            *self.argv,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL,
        )
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            text = line.decode(errors="replace").strip()
            if text.startswith(LISTENING):
                return text[len(LISTENING) :]
        await self.process.wait()
        return None

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signum)


async def supervise(
    sock: socket.socket, argv: Sequence[str], workers: int, env: Mapping[str, str], grace_s: float
) -> int:
    """Run the workers until SIGTERM/SIGINT; forward SIGHUP; restart any that crash."""
    with shared_folder(env) as env_with_metrics:  # one scrape covers every worker
        return await _supervise(sock, argv, workers, env_with_metrics, grace_s)


async def _supervise(
    sock: socket.socket, argv: Sequence[str], workers: int, env: Mapping[str, str], grace_s: float
) -> int:
    host, port = sock.getsockname()[:2]
    child_env = {**env, WORKER_VARIABLE: "1", PARENT_PID_VARIABLE: str(os.getpid())}
    pool = [
        Worker(i, [*argv, "--host", host, "--port", str(port)], child_env) for i in range(workers)
    ]
    urls = await asyncio.gather(*(w.start() for w in pool))
    if any(url is None for url in urls):
        for worker in pool:
            worker.signal(signal.SIGTERM)
        await asyncio.gather(*(w.process.wait() for w in pool if w.process is not None))
        print("mini-llm: a worker did not start; see its errors above", file=sys.stderr)
        return 1
    print(f"{LISTENING}{urls[0]}", flush=True)

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
    return 0


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
