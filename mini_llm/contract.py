"""What a gateway and the process that starts it agree on: argv, variables, stdout, exit codes.

`serve`, its `--workers` supervisor, the SDK and the tests all build and read these here, so
none of them can drift from the others. Standard library only: parents import it.
"""

from __future__ import annotations

import os
import re
import sys

# Environment variables a starting process sets for the gateway it starts.
PARENT_PID_VARIABLE = "MINI_LLM_PARENT_PID"  # the gateway stops once this process is gone
WORKER_VARIABLE = "MINI_LLM_WORKER"  # "1": a worker of `serve --workers N` on a given port
# The supervisor's folder where its workers keep their metrics (prometheus_client reads it).
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

# Exit codes of `mini-llm serve`; check-config and route use 0, 1, 2 and 4 alike.
EXIT_OK = 0
EXIT_INVALID = 1  # the routing table is invalid (or refuses to start): nothing was bound
EXIT_USAGE = 2  # the command line was rejected (argparse's own code)
EXIT_CANNOT_BIND = 3  # no port could be bound (uvicorn's STARTUP_FAILURE)
EXIT_INTERNAL = 4  # an unexpected exception; its traceback is on stderr

EXIT_MEANINGS = {
    EXIT_OK: "ok",
    EXIT_INVALID: "invalid routing table",
    EXIT_USAGE: "command line rejected",
    EXIT_CANNOT_BIND: "cannot bind a port",
    EXIT_INTERNAL: "internal error",
}

_PREFIX = "mini-llm listening on "
_LISTENING = re.compile(
    re.escape(_PREFIX)
    + r"http://(?:\[(?P<ipv6>[^\]\s]+)\]|(?P<host>[^\s:/\[\]]+)):(?P<port>\d{1,5})"
)


def http_url(host: str, port: int) -> str:
    """`http://HOST:PORT`, an IPv6 host in brackets."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def listening_line(host: str, port: int) -> str:
    """The one line `serve` prints to stdout once it accepts connections."""
    return _PREFIX + http_url(host, port)


def parse_listening_line(line: str) -> tuple[str, int] | None:
    """(host, port) from a listening line (IPv6 without brackets); None for any other line."""
    match = _LISTENING.fullmatch(line.rstrip("\r\n"))
    if match is None or int(match["port"]) > 65535:
        return None
    return match["ipv6"] or match["host"], int(match["port"])


def serve_argv(
    *,
    python: str = sys.executable,
    config: str | os.PathLike[str] | None = None,
    host: str | None = None,
    port: int | None = None,
    log_requests: bool = False,
    reload: bool | None = None,
    workers: int = 1,
) -> list[str]:
    """`PYTHON -m mini_llm serve ...`; what is left at its default is left to the table."""
    argv = [python, "-m", "mini_llm", "serve"]
    if config is not None:
        argv += ["-c", os.fspath(config)]
    if host is not None:
        argv += ["--host", host]
    if port is not None:
        argv += ["--port", str(port)]
    if log_requests:
        argv.append("--log-requests")
    if reload is False:
        argv.append("--no-reload")
    if workers != 1:
        argv += ["--workers", str(workers)]
    return argv
