"""SIGTERM: stop accepting, let requests in flight finish within the grace in force, exit 0."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..conftest import GatewayFactory
from ..helpers import wait_for
from ..mock_upstream import MockUpstream
from .test_reload import generation, table


def with_grace(text: str, grace_s: float) -> str:
    return text.replace("server:\n", f"server:\n  shutdown_grace_s: {grace_s:g}\n", 1)


def open_stream(http: httpx.Client, model: str) -> Iterator[bytes]:
    """The raw chunks of a streamed request, once its first chunk has arrived."""
    request = http.build_request(
        "POST", "/v1/chat/completions", json={"model": model, "stream": True}
    )
    response = http.send(request, stream=True)
    assert response.status_code == 200
    chunks = response.iter_raw()
    assert next(chunks).startswith(b"data: ")
    return chunks


def test_a_reloaded_shorter_grace_cuts_a_hanging_stream(
    start_gateway: GatewayFactory, upstream: MockUpstream, tmp_path: Path
) -> None:
    gateway = start_gateway(with_grace(table(upstream, 1), 30))
    (tmp_path / "mini-llm.yaml").write_text(with_grace(table(upstream, 2), 1))
    wait_for(lambda: generation(gateway) == 2)
    with httpx.Client(base_url=gateway.url, timeout=10) as http:
        chunks = open_stream(http, "mock:hang-stream")
        started = time.monotonic()
        gateway.signal()
        assert gateway.wait_stderr("draining in-flight requests for up to 1s")
        code = gateway.process.wait(10)
        took = time.monotonic() - started
        with pytest.raises(httpx.RemoteProtocolError):  # cut, not ended as if complete
            b"".join(chunks)
    assert code == 0
    assert 0.9 <= took < 3.0  # the new grace, not the 30 s the gateway started with


def test_a_reloaded_longer_grace_lets_a_stream_finish(
    start_gateway: GatewayFactory, upstream: MockUpstream, tmp_path: Path
) -> None:
    gateway = start_gateway(with_grace(table(upstream, 1), 1))
    (tmp_path / "mini-llm.yaml").write_text(with_grace(table(upstream, 2), 30))
    wait_for(lambda: generation(gateway) == 2)
    with httpx.Client(base_url=gateway.url, timeout=10) as http:
        chunks = open_stream(http, "mock:slow-stream")
        gateway.signal()
        assert gateway.wait_stderr("draining in-flight requests for up to 30s")
        # Well past the 1 s it started with (twice over), the stream is still being served.
        with pytest.raises(subprocess.TimeoutExpired):
            gateway.process.wait(2.5)
        upstream.release.set()
        rest = b"".join(chunks)
    assert rest.endswith(b"data: [DONE]\n\n")
    assert gateway.process.wait(10) == 0


def test_an_idle_keep_alive_connection_does_not_hold_up_the_stop(
    start_gateway: GatewayFactory, upstream: MockUpstream
) -> None:
    gateway = start_gateway(with_grace(table(upstream, 1), 30))
    with httpx.Client(base_url=gateway.url, timeout=10) as http:
        assert http.get("/health").status_code == 200  # the connection stays open, idle
        started = time.monotonic()
        gateway.signal()
        assert gateway.process.wait(10) == 0
        assert time.monotonic() - started < 3.0  # nothing in flight: no grace to wait out
