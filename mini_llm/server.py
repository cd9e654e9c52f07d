"""`mini-llm serve`: load the table, bind with port retries, serve, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from . import accesslog
from .access import exposure_problem
from .app import STATE, create_app
from .config import Config, find_config, load_config
from .contract import (
    EXIT_CANNOT_BIND,
    EXIT_INTERNAL,
    EXIT_INVALID,
    EXIT_OK,
    WORKER_VARIABLE,
    listening_line,
    serve_argv,
)
from .observe import METRICS
from .parent import parent_pid, watch_parent
from .reload import Reloader, file_digest
from .source import ConfigError
from .workers import supervise

log = logging.getLogger("mini_llm")


class BindError(Exception):
    """No port could be bound."""


def configure_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("mini-llm %(levelname)s: %(message)s"))
    root = logging.getLogger("mini_llm")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False
    accesslog.configure(sys.stderr)


def apply_flags(
    config: Config,
    *,
    host: str | None = None,
    port: int | None = None,
    log_requests: bool | None = None,
    reload: bool | None = None,
) -> Config:
    """Command-line flags take precedence over the environment and the file."""
    flags = {"host": host, "port": port, "log_requests": log_requests, "reload": reload}
    changes: dict[str, Any] = {k: v for k, v in flags.items() if v is not None}
    if not changes:
        return config
    return dataclasses.replace(config, server=dataclasses.replace(config.server, **changes))


def bind(
    host: str, port: int, retries: int, *, reuse_port: bool = False, listen: bool = True
) -> socket.socket:
    """A listening socket on port, or the next free one up to `retries` more."""
    last: OSError | None = None
    candidates = [0] if port == 0 else range(port, min(port + retries, 65535) + 1)
    for candidate in candidates:
        infos = socket.getaddrinfo(
            host, candidate, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
            if listen:
                sock.listen(1024)
            sock.setblocking(False)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
            if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                break
    tried = "any port" if port == 0 else f"ports {port}-{candidates[-1]}"
    reason = last.strerror if last is not None else "unknown error"
    raise BindError(f"cannot listen on {host} ({tried}): {reason}")


def serve(
    config_path: str | None,
    *,
    host: str | None = None,
    port: int | None = None,
    log_requests: bool | None = None,
    reload: bool | None = None,
    workers: int = 1,
    env: Mapping[str, str] | None = None,
) -> int:
    """Run the gateway until SIGTERM/SIGINT; the exit code for the process (see contract)."""
    configure_logging()
    try:
        return _serve(config_path, host, port, log_requests, reload, workers, env)
    except Exception:
        # A bug, not a setting the user can fix: say so with the whole story, and exit with a
        # code that a parent cannot mistake for an invalid table or a busy port.
        log.exception("internal error; please report it")
        return EXIT_INTERNAL


def _serve(
    config_path: str | None,
    host: str | None,
    port: int | None,
    log_requests: bool | None,
    reload: bool | None,
    workers: int,
    env: Mapping[str, str] | None,
) -> int:
    environ = dict(os.environ if env is None else env)
    path = find_config(config_path, environ)
    digest = file_digest(Path(path))  # before the load: a change in between means a reload
    try:
        config = load_config(path, environ)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"mini-llm: {path}: {len(exc.problems)} error(s); not started", file=sys.stderr)
        return EXIT_INVALID
    for warning in config.warnings:
        log.warning("%s", warning)
    flags: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_requests": log_requests,
        "reload": reload,
    }
    config = apply_flags(config, **flags)
    exposed = exposure_problem(config.server)
    if exposed is not None:
        print(f"mini-llm: {exposed}; not started", file=sys.stderr)
        return EXIT_INVALID
    worker = environ.get(WORKER_VARIABLE) == "1"
    server = config.server
    try:
        if workers > 1 and not worker:
            # Holds the port (bound, not listening) while the workers listen on it.
            sock = bind(
                server.host, server.port, server.port_retries, reuse_port=True, listen=False
            )
        else:
            retries = 0 if worker else server.port_retries
            sock = bind(server.host, server.port, retries, reuse_port=worker)
    except (BindError, OSError) as exc:
        print(f"mini-llm: {exc}", file=sys.stderr)
        return EXIT_CANNOT_BIND
    if workers > 1 and not worker:
        bound_host, bound_port = sock.getsockname()[:2]
        argv = serve_argv(
            config=path,
            host=bound_host,
            port=bound_port,
            log_requests=bool(log_requests),
            reload=reload,
        )
        return asyncio.run(supervise(sock, argv, workers, environ, server.shutdown_grace_s))
    reloader_flags = {k: v for k, v in flags.items() if v is not None}
    return run_loop(_run(config, sock, Path(path), environ, reloader_flags, digest))


def run_loop(main: Coroutine[Any, Any, int]) -> int:
    """Serve on uvloop when it is installed (`pip install mini-llm[fast]`), else on asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


async def _run(
    config: Config,
    sock: socket.socket,
    path: Path,
    env: Mapping[str, str],
    flags: Mapping[str, Any],
    digest: bytes | None,
) -> int:
    app = create_app(config)
    # No shutdown_timeout: the grace can change in a reload, so drain() applies it.
    runner = web.AppRunner(
        app,
        handler_cancellation=True,  # a client that leaves cancels its upstream request
        access_log=None,
        # Also closes a connection whose headers never complete (set at start-up only).
        keepalive_timeout=config.server.client_timeout_s,
    )
    await runner.setup()
    site = web.SockSite(runner, sock)
    await site.start()

    state = app[STATE]
    reloader = Reloader(state, path, env, digest, adjust=lambda c: apply_flags(c, **flags))
    reloader.reloaded = app[METRICS].reloaded  # reloads are counted (the first load is not one)
    stop = asyncio.Event()
    tasks: set[asyncio.Task[Any]] = set()

    def spawn(coroutine: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coroutine)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: spawn(reloader.reload(force=True)))
    spawn(watch_parent(parent_pid(env), stop))  # a parent that dies takes us with it
    print(listening_line(*sock.getsockname()[:2]), flush=True)
    # Watching starts here if server.reload is on, and later if a reload turns it on. Once the
    # watch is in place, the watcher compares the file with what was loaded, so an edit made
    # before then is not missed.
    reloader.apply_watch_setting()
    # What start-up built lives as long as the process: keep it out of every full collection.
    gc.collect()
    gc.freeze()
    await stop.wait()
    grace_s = state.config.server.shutdown_grace_s  # as the last reload left it
    log.info("stopping: draining in-flight requests for up to %gs", grace_s)
    reloader.close()
    for task in list(tasks):
        task.cancel()
    await drain(runner, grace_s)
    return EXIT_OK


async def drain(runner: web.BaseRunner, grace_s: float) -> None:
    """Stop accepting; requests in flight get `grace_s` to finish, then are cancelled."""
    for site in list(runner.sites):
        await site.stop()  # the listening socket closes: new connections are refused
    server = runner.server
    if server is not None:
        await asyncio.sleep(0)  # requests already read get to their handlers first
        server.pre_shutdown()  # idle keep-alive connections close now, busy ones once answered
        connections = server.connections
        # Each waits for its handler, up to the grace; one deadline for all of them, because
        # a connection's own shutdown may wait a second grace after the first.
        finishing = asyncio.gather(*(c.shutdown(grace_s) for c in connections))
        try:
            await asyncio.wait_for(finishing, grace_s)
        except asyncio.TimeoutError:
            for connection in connections:
                connection.force_close()  # its handler is cancelled, closing the upstream
    # Nothing is left in flight, so the runner's own shutdown wait finds nothing to wait for.
    await runner.cleanup()
