"""`serve --workers N`: several processes on one port, all reloading, all stopping."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx

from ..conftest import GatewayFactory
from ..helpers import wait_for
from ..mock_upstream import MockUpstream
from .test_reload import table


def health_seen(url: str, connections: int = 40) -> list[dict[str, object]]:
    """/health over fresh connections, so the kernel spreads them across workers."""
    seen = []
    for _ in range(connections):
        with httpx.Client(base_url=url) as http:
            seen.append(http.get("/health").json())
    return seen


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is as good as gone
        return stat.read().split(") ", 1)[1][0] != "Z"


def test_workers_share_the_port_and_the_reload(
    start_gateway: GatewayFactory, upstream: MockUpstream, tmp_path: Path
) -> None:
    gateway = start_gateway(table(upstream, 1), "--workers", "2")
    assert gateway.stdout_lines == [f"mini-llm listening on {gateway.url}\n"]
    pids = {int(str(h["pid"])) for h in health_seen(gateway.url)}
    assert len(pids) == 2 and gateway.process.pid not in pids
    response = httpx.post(gateway.url + "/v1/chat/completions", json={"model": "m"})
    assert response.json()["model"] == "model-v1"

    (tmp_path / "mini-llm.yaml").write_text(table(upstream, 2))

    def all_reloaded() -> bool:
        return all(h["config"]["generation"] == 2 for h in health_seen(gateway.url, 20))  # type: ignore[index]

    wait_for(all_reloaded, timeout=5)
    assert gateway.stop() == 0
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in pids)


def test_a_crashed_worker_is_replaced(
    start_gateway: GatewayFactory, upstream: MockUpstream
) -> None:
    gateway = start_gateway(table(upstream, 1), "--workers", "2")
    pids = {int(str(h["pid"])) for h in health_seen(gateway.url)}
    victim = min(pids)
    os.kill(victim, 9)
    assert gateway.wait_stderr("exited with -9; restarting")

    def replaced() -> bool:
        seen = {int(str(h["pid"])) for h in health_seen(gateway.url, 20)}
        return len(seen) == 2 and victim not in seen

    wait_for(replaced, timeout=8)
