"""What processes agree on (contract.py): the listening line, the serve argv, exit codes."""

from __future__ import annotations

import pytest

from mini_llm import contract
from mini_llm.cli import _parser
from mini_llm.contract import (
    EXIT_CANNOT_BIND,
    EXIT_INTERNAL,
    EXIT_INVALID,
    listening_line,
    parse_listening_line,
    serve_argv,
)
from mini_llm.workers import failure_code


@pytest.mark.parametrize(
    ("host", "port", "line"),
    [
        ("127.0.0.1", 3333, "mini-llm listening on http://127.0.0.1:3333"),
        ("::1", 40001, "mini-llm listening on http://[::1]:40001"),
        ("localhost", 0, "mini-llm listening on http://localhost:0"),
    ],
)
def test_listening_line_round_trips(host: str, port: int, line: str) -> None:
    assert listening_line(host, port) == line
    assert parse_listening_line(line) == (host, port)
    assert parse_listening_line(line + "\r\n") == (host, port)  # as read from a pipe


@pytest.mark.parametrize(
    "line",
    [
        "",
        "mini-llm listening on http://127.0.0.1",
        "mini-llm listening on http://127.0.0.1:99999",
        "mini-llm listening on http://127.0.0.1:80/v1",
        "mini-llm listening on http://[::1:80",
        "mini-llm INFO: mini-llm listening on http://127.0.0.1:80",
        " mini-llm listening on http://127.0.0.1:80",
        "floor listening on http://127.0.0.1:80",
    ],
)
def test_other_lines_are_not_the_listening_line(line: str) -> None:
    assert parse_listening_line(line) is None


def test_serve_argv_passes_only_what_was_given() -> None:
    assert serve_argv(python="py") == ["py", "-m", "mini_llm", "serve"]
    assert serve_argv(
        python="py", config="t.yaml", host="::1", port=0, log_requests=True, reload=False,
        workers=2,
    ) == [
        "py", "-m", "mini_llm", "serve", "-c", "t.yaml", "--host", "::1", "--port", "0",
        "--log-requests", "--no-reload", "--workers", "2",
    ]  # fmt: skip
    assert "--no-reload" not in serve_argv(reload=True)  # on is the table's to say


def test_the_command_line_accepts_what_serve_argv_builds() -> None:
    argv = serve_argv(
        config="t.yaml", host="::1", port=7, log_requests=True, reload=False, workers=3
    )
    assert argv[1:3] == ["-m", "mini_llm"]
    args = _parser().parse_args(argv[3:])
    assert (args.command, args.config, args.host, args.port) == ("serve", "t.yaml", "::1", 7)
    assert (args.log_requests, args.reload, args.workers) == (True, False, 3)


def test_exit_codes_are_distinct_and_named() -> None:
    codes = {name: value for name, value in vars(contract).items() if name.startswith("EXIT_")}
    codes.pop("EXIT_MEANINGS")
    assert codes == {
        "EXIT_OK": 0,
        "EXIT_INVALID": 1,
        "EXIT_USAGE": 2,
        "EXIT_CANNOT_BIND": 3,
        "EXIT_INTERNAL": 4,
    }
    assert set(contract.EXIT_MEANINGS) == set(codes.values())


@pytest.mark.parametrize(
    ("worker", "supervisor"),
    [
        (EXIT_INVALID, EXIT_INVALID),
        (EXIT_CANNOT_BIND, EXIT_CANNOT_BIND),
        (EXIT_INTERNAL, EXIT_INTERNAL),
        (2, EXIT_INTERNAL),  # the supervisor built a command line its worker refused
        (0, EXIT_INTERNAL),  # ended without ever listening
        (-9, EXIT_INTERNAL),  # killed by a signal
        (None, EXIT_INTERNAL),
    ],
)
def test_a_worker_failure_becomes_the_supervisor_exit_code(
    worker: int | None, supervisor: int
) -> None:
    assert failure_code(worker) == supervisor
