"""`mini-llm serve` exits with the code contract.py names for each way it can fail to start."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mini_llm.contract import EXIT_CANNOT_BIND, EXIT_INTERNAL, EXIT_INVALID, EXIT_OK

from ..helpers import REPO, GatewayProcess, clean_env

TABLE = """\
version: 1
providers:
  local:
    base_url: http://127.0.0.1:9/v1   # never contacted
    auth: none
routes:
  default: local
"""


def refused(process: GatewayProcess) -> int:
    """The exit code of a gateway that must not start; it printed nothing to stdout."""
    with pytest.raises(RuntimeError, match="exited before listening"):
        process.wait_listening()
    code = process.stop()
    assert process.stdout_lines == []
    return code


@pytest.fixture
def table(tmp_path: Path) -> Path:
    path = tmp_path / "mini-llm.yaml"
    path.write_text(TABLE)
    return path


def test_a_clean_stop_exits_0(table: Path) -> None:
    process = GatewayProcess(table)
    process.wait_listening()
    assert process.stop() == EXIT_OK


def test_an_invalid_table_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(TABLE.replace("auth: none", "auth: bogus"))
    process = GatewayProcess(path)
    assert refused(process) == EXIT_INVALID
    assert f"{path}:5:11: " in process.stderr()


def test_serving_off_loopback_without_keys_exits_1(table: Path) -> None:
    process = GatewayProcess(table, "--host", "0.0.0.0")
    assert refused(process) == EXIT_INVALID
    assert "mini-llm: refusing to serve on 0.0.0.0" in process.stderr()


def test_a_taken_port_without_retries_exits_3(table: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = GatewayProcess(table, "--port", str(port), env={"MINI_LLM_PORT_RETRIES": "0"})
        assert refused(process) == EXIT_CANNOT_BIND
    assert f"mini-llm: cannot listen on 127.0.0.1 (ports {port}-{port}): " in process.stderr()
    assert "Traceback" not in process.stderr()


def test_an_address_that_cannot_be_bound_exits_3(table: Path) -> None:
    # 192.0.2.1 (TEST-NET-1) is nobody's address; off loopback without keys on purpose.
    anonymous = {"MINI_LLM__SERVER__AUTH__ALLOW_ANONYMOUS": "true"}
    process = GatewayProcess(table, "--host", "192.0.2.1", env=anonymous)
    assert refused(process) == EXIT_CANNOT_BIND
    assert "mini-llm: cannot listen on 192.0.2.1 (any port): " in process.stderr()


def test_an_unexpected_exception_exits_4_with_its_traceback(table: Path) -> None:
    # A bug stands in as an app factory that raises, after the table loaded and the port bound.
    script = (
        "import sys, mini_llm.server as server, mini_llm.cli as cli\n"
        "def broken(config): raise RuntimeError('planted bug')\n"
        "server.create_app = broken\n"
        f"sys.exit(cli.main(['serve', '-c', {str(table)!r}, '--port', '0']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=clean_env({"PYTHONPATH": str(REPO)}),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == EXIT_INTERNAL
    assert done.stdout == ""
    assert "mini-llm ERROR: internal error; please report it" in done.stderr
    assert "Traceback" in done.stderr and "RuntimeError: planted bug" in done.stderr
