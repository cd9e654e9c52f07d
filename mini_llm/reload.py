"""Watch the table's folder, load, compile, swap; keep the old table when the new one fails."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import watchfiles

from .access import exposure_problem
from .app import State
from .config import Config, load_config
from .source import ConfigError

log = logging.getLogger("mini_llm")

# Settings the running process cannot change without rebinding its socket.
RESTART_ONLY = ("host", "port")


class Reloader:
    """Reloads the routing table into a State when the file changes or on demand."""

    def __init__(
        self,
        state: State,
        path: Path,
        env: Mapping[str, str],
        digest: bytes | None,
        adjust: Callable[[Config], Config] = lambda config: config,
        reloaded: Callable[[bool], None] = lambda ok: None,
    ) -> None:
        self.state = state
        self.path = path
        self.env = env
        self.adjust = adjust  # re-applies command-line flags, which outrank the file
        self.reloaded = reloaded  # told of each reload's success or failure (metrics)
        self._digest = digest  # of the file as it was before the running table was loaded
        self._lock = asyncio.Lock()
        self._watcher: asyncio.Task[None] | None = None
        self._unwatch = asyncio.Event()  # set: the current watcher stops
        self._tasks: set[asyncio.Task[None]] = set()  # the current one and any winding down
        self._closed = False

    async def reload(self, *, force: bool = False) -> bool:
        """Load the file again; True when a new table is in service."""
        async with self._lock:
            if _is_empty(self.path):
                # Likely a write in place caught between truncate and write: look again.
                await asyncio.sleep(0.1)
            digest = file_digest(self.path)
            if not force and digest == self._digest:
                return False
            self._digest = digest
            try:
                config = await asyncio.to_thread(load_config, self.path, self.env)
            except ConfigError as exc:
                for problem in exc.problems:
                    log.error("%s", problem)
                log.error(
                    "kept generation %d: %s has %d error(s)",
                    self.state.current.generation,
                    self.path.name,
                    len(exc.problems),
                )
                self.state.last_error = "\n".join(str(p) for p in exc.problems)
                self.reloaded(False)
                return False
            config = self._keep_restart_only(self.adjust(config))
            exposed = exposure_problem(config.server)
            if exposed is not None:
                log.error("kept generation %d: %s", self.state.current.generation, exposed)
                self.state.last_error = exposed
                self.reloaded(False)
                return False
            snapshot = self.state.install(config)
            self.reloaded(True)
            log.info(
                "reloaded %s: generation %d, %d providers, %d aliases",
                self.path.name,
                snapshot.generation,
                len(config.providers),
                len(config.routes.aliases),
            )
            self.apply_watch_setting(announce=True)
            return True

    def _keep_restart_only(self, config: Config) -> Config:
        running = self.state.config.server
        changed = {
            name: getattr(running, name)
            for name in RESTART_ONLY
            if getattr(config.server, name) != getattr(running, name)
        }
        for name, value in changed.items():
            log.warning(
                "server.%s changed to %r: restart required; keeping %r",
                name,
                getattr(config.server, name),
                value,
            )
        if not changed:
            return config
        return dataclasses.replace(config, server=dataclasses.replace(config.server, **changed))

    def apply_watch_setting(self, *, announce: bool = False) -> None:
        """Watch the file while `server.reload` is on in the table in service, and only then."""
        wanted = self.state.config.server.reload and not self._closed
        # A watcher told to stop may still be winding down: it no longer counts.
        watching = (
            self._watcher is not None and not self._watcher.done() and not self._unwatch.is_set()
        )
        if wanted and not watching:
            if announce:
                log.info("server.reload is now true: watching %s", self.path.name)
            self._unwatch = asyncio.Event()
            self._watcher = asyncio.create_task(self._watch(self._unwatch))
            self._tasks.add(self._watcher)
            self._watcher.add_done_callback(self._tasks.discard)
        elif watching and not wanted:
            log.info("server.reload is now false: no longer watching %s", self.path.name)
            self._unwatch.set()

    def close(self) -> None:
        """Stop watching for good: the gateway is stopping."""
        self._closed = True
        self._unwatch.set()
        for task in list(self._tasks):
            task.cancel()

    async def _watch(self, stop: asyncio.Event) -> None:
        """Reload on every change to the file, however editors or Kubernetes write it."""
        try:
            await self._watch_until(stop)
        except Exception as exc:  # the gateway keeps serving; only watching stops
            log.error("stopped watching %s: %s: %s", self.path, type(exc).__name__, exc)

    async def _watch_until(self, stop: asyncio.Event) -> None:
        # A reload that turns server.reload off sets `stop`: the loops below then end.
        while not stop.is_set():
            folders = _folders(self.path)
            changes = watchfiles.awatch(
                *folders,
                watch_filter=None,  # editors' temp files are filtered below, by name
                recursive=False,
                stop_event=stop,
                debounce=400,
                step=30,
            )
            pending = asyncio.ensure_future(anext(changes))
            # One turn of the loop runs the generator up to its first wait: the OS watch exists
            # from then on, and a change made before it is caught by the check that follows.
            await asyncio.sleep(0)
            await self.reload()
            try:
                while not stop.is_set():
                    try:
                        batch = await pending
                    except StopAsyncIteration:
                        return
                    if any(_relevant(self.path, Path(p)) for _, p in batch):
                        await self.reload()
                    if _folders(self.path) != folders:
                        break  # the file now resolves elsewhere (a swapped symlink): rewatch
                    pending = asyncio.ensure_future(anext(changes))
            finally:
                pending.cancel()
                await changes.aclose()


def file_digest(path: Path) -> bytes | None:
    try:
        return hashlib.blake2b(path.read_bytes(), digest_size=16).digest()
    except OSError:
        return None


def _is_empty(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except OSError:
        return False


def _folders(path: Path) -> tuple[str, ...]:
    """The file's own folder and the folder its symlink chain ends in."""
    own = path.absolute().parent
    real = path.resolve().parent
    return (str(own),) if own == real else (str(own), str(real))


def _relevant(path: Path, changed: Path) -> bool:
    # The file itself, what it points at, or a ConfigMap-style `..data` swap.
    if changed.name == path.name or changed.name.startswith(".."):
        return True
    try:
        return changed == path.resolve() or os.path.samefile(changed, path)
    except OSError:
        return False
