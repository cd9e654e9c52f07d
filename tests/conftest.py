"""Shared fixtures: a real mock upstream and the real gateway in a subprocess."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .helpers import GatewayProcess, RedisServer
from .mock_upstream import MockUpstream


@pytest.fixture(scope="session")
def mock_server() -> Iterator[MockUpstream]:
    server = MockUpstream().start()
    yield server
    server.stop()


@pytest.fixture
def upstream(mock_server: MockUpstream) -> MockUpstream:
    """The shared mock upstream, with this test's expectations reset."""
    mock_server.reset()
    return mock_server


GatewayFactory = Callable[..., GatewayProcess]


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[GatewayFactory]:
    """Start `mini-llm serve` on a routing table text; stopped at the end of the test."""
    started: list[GatewayProcess] = []

    def start(
        table: str, *args: str, env: dict[str, str] | None = None, name: str = "mini-llm.yaml"
    ) -> GatewayProcess:
        path = tmp_path / name
        path.write_text(table)
        gateway = GatewayProcess(path, *args, env=env)
        started.append(gateway)
        gateway.wait_listening()
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own; skipped if absent, except in CI (.ci/run installs it)."""
    if shutil.which("redis-server") is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed (apt-get install redis-server)")
        pytest.skip("redis-server is not installed")
    folder = tmp_path / "redis"
    folder.mkdir()
    server = RedisServer(folder).start()
    yield server
    server.stop()
