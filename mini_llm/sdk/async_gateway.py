"""AsyncGateway: run `mini-llm serve` as a supervised child of an asyncio parent."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from typing import TYPE_CHECKING

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
    # asyncio is imported inside AsyncGateway only: it costs ~40 ms and `import mini_llm`
    # (check-config, a sync parent) should not pay for it.
    import asyncio
    from types import TracebackType


class _AsyncChild:
    """A running `mini-llm serve` whose pipes two tasks drain."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        import asyncio

        self.process = process
        self.output = Output()
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
            start_new_session=True,  # see mini_llm.sdk.sync._Child
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
                what = f"listened on {http_url(*address)} but /health is not 200"
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
        writer.write(health_request(host))
        return status_ok(await asyncio.wait_for(reader.readline(), timeout))
    except (OSError, asyncio.TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


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


class AsyncGateway(Base[_AsyncChild]):
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
        RUNNING.add(self)
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
        RUNNING.discard(self)

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

        backoff = Backoff()
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
        RUNNING.discard(self)

    async def __aenter__(self) -> AsyncGateway:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()
