"""Hot reload with real file edits against the real gateway process."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from ..conftest import GatewayFactory
from ..helpers import GatewayProcess, wait_for
from ..mock_upstream import MockUpstream


def table(
    mock: MockUpstream,
    version: int,
    *,
    extra_provider: bool = True,
    host: str = "",
    body_limit: int = 4096,
) -> str:
    server_host = f"\n  host: {host}" if host else ""
    second = (
        f"""
  second:
    base_url: {mock.url}
    auth: none"""
        if extra_provider
        else ""
    )
    return f"""version: 1
server:
  max_body_bytes: {body_limit}{server_host}
providers:
  mock:
    base_url: {mock.url}
    keys: [sk-reload-key-aaaa1111, sk-reload-key-bbbb2222]
    headers: {{x-table: "v{version}"}}{second}
routes:
  aliases:
    m: mock:model-v{version}
"""


def generation(gateway: GatewayProcess) -> int:
    return int(httpx.get(gateway.url + "/health").json()["config"]["generation"])


def served_model(gateway: GatewayProcess) -> str:
    response = httpx.post(gateway.url + "/v1/chat/completions", json={"model": "m"})
    assert response.status_code == 200, response.text
    return str(response.json()["model"])


def test_plain_write_is_in_effect_within_a_second(
    start_gateway: GatewayFactory, upstream: MockUpstream, tmp_path: Path
) -> None:
    gateway = start_gateway(table(upstream, 1))
    assert served_model(gateway) == "model-v1"
    (tmp_path / "mini-llm.yaml").write_text(table(upstream, 2))
    took = wait_for(lambda: served_model(gateway) == "model-v2")
    assert took < 1.0
    assert generation(gateway) == 2
    assert gateway.wait_stderr("reloaded mini-llm.yaml: generation 2, 2 providers, 1 aliases")


def test_atomic_rename_is_seen(
    start_gateway: GatewayFactory, upstream: MockUpstream, tmp_path: Path
) -> None:
    gateway = start_gateway(table(upstream, 1))
    temp = tmp_path / ".mini-llm.yaml.tmp"
    temp.write_text(table(upstream, 2))
    os.replace(temp, tmp_path / "mini-llm.yaml")
    assert wait_for(lambda: served_model(gateway) == "model-v2") < 1.0


def test_configmap_symlink_swap_is_seen(upstream: MockUpstream, tmp_path: Path) -> None:
    # The layout Kubernetes mounts: file -> ..data/file, ..data -> ..<timestamp>/
    (tmp_path / "..v1").mkdir()
    (tmp_path / "..v1" / "mini-llm.yaml").write_text(table(upstream, 1))
    (tmp_path / "..data").symlink_to("..v1")
    (tmp_path / "mini-llm.yaml").symlink_to("..data/mini-llm.yaml")
    gateway = GatewayProcess(tmp_path / "mini-llm.yaml")
    try:
        gateway.wait_listening()
        assert served_model(gateway) == "model-v1"
        (tmp_path / "..v2").mkdir()
        (tmp_path / "..v2" / "mini-llm.yaml").write_text(table(upstream, 2))
        (tmp_path / "..data_tmp").symlink_to("..v2")
        os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
        assert wait_for(lambda: served_model(gateway) == "model-v2") < 1.0
        # and again, now that the file resolves into the new folder
        (tmp_path / "..v3").mkdir()
        (tmp_path / "..v3" / "mini-llm.yaml").write_text(table(upstream, 3))
        (tmp_path / "..data_tmp").symlink_to("..v3")
        os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
        assert wait_for(lambda: served_model(gateway) == "model-v3") < 1.0
    finally:
        assert gateway.stop() == 0


def test_broken_edit_keeps_the_old_table_until_fixed(
    start_gateway: GatewayFactory, upstream: MockUpstream, tmp_path: Path
) -> None:
    gateway = start_gateway(table(upstream, 1))
    path = tmp_path / "mini-llm.yaml"
    path.write_text(table(upstream, 2).replace("base_url", "base_ur", 1))

    def last_error() -> object:
        return httpx.get(gateway.url + "/health").json()["config"]["last_error"]

    wait_for(lambda: last_error() is not None)
    error = str(last_error())
    assert error.splitlines() == [
        f"{path}:5:3: missing required key `base_url` (at /providers/mock)",
        f"{path}:6:5: unknown key `base_ur`; did you mean `base_url`? (at /providers/mock/base_ur)",
    ]
    assert gateway.wait_stderr(f"{path}:6:5: unknown key `base_ur`")
    assert served_model(gateway) == "model-v1"
    assert generation(gateway) == 1
    path.write_text(table(upstream, 3))
    wait_for(lambda: served_model(gateway) == "model-v3")
    assert last_error() is None
    assert generation(gateway) == 2


def test_sighup_forces_a_reload_and_no_reload_stops_watching(
    start_gateway: GatewayFactory, upstream: MockUpstream, tmp_path: Path
) -> None:
    gateway = start_gateway(table(upstream, 1), "--no-reload")
    (tmp_path / "mini-llm.yaml").write_text(table(upstream, 2))
    time.sleep(1.5)  # a change would be in effect by now if the file were watched
    assert served_model(gateway) == "model-v1"
    gateway.signal(signal.SIGHUP)
    wait_for(lambda: generation(gateway) == 2)
    assert served_model(gateway) == "model-v2"


def test_restart_only_settings_keep_their_value(
    start_gateway: GatewayFactory, upstream: MockUpstream, tmp_path: Path
) -> None:
    gateway = start_gateway(table(upstream, 1))
    (tmp_path / "mini-llm.yaml").write_text(table(upstream, 2, host="0.0.0.0", body_limit=100))
    wait_for(lambda: served_model(gateway) == "model-v2")
    assert gateway.wait_stderr("server.host changed to '0.0.0.0': restart required")
    assert httpx.get(gateway.url + "/health").status_code == 200
    # the new body limit is in force
    big = httpx.post(gateway.url + "/v1/chat/completions", json={"model": "m", "pad": "x" * 200})
    assert big.status_code == 413


def test_removed_provider_finishes_its_stream(
    start_gateway: GatewayFactory, upstream: MockUpstream, tmp_path: Path
) -> None:
    gateway = start_gateway(table(upstream, 1))
    with (
        httpx.Client(base_url=gateway.url, timeout=10) as http,
        http.stream(
            "POST", "/v1/chat/completions", json={"model": "second:slow-stream", "stream": True}
        ) as response,
    ):
        chunks = response.iter_raw()
        assert next(chunks).startswith(b"data: ")
        (tmp_path / "mini-llm.yaml").write_text(table(upstream, 2, extra_provider=False))
        wait_for(lambda: generation(gateway) == 2)
        gone = http.post("/v1/chat/completions", json={"model": "second:x"})
        assert gone.status_code == 404
        upstream.release.set()
        rest = b"".join(chunks)
    assert response.status_code == 200
    assert rest.endswith(b"data: [DONE]\n\n")


def test_unchanged_provider_keeps_its_key_rotation(
    start_gateway: GatewayFactory, upstream: MockUpstream, tmp_path: Path
) -> None:
    gateway = start_gateway(table(upstream, 1))
    served_model(gateway)
    first = upstream.requests[-1].key
    (tmp_path / "mini-llm.yaml").write_text(table(upstream, 1) + "\n# a comment\n")
    wait_for(lambda: generation(gateway) == 2)
    served_model(gateway)
    assert upstream.requests[-1].key != first


def test_reload_under_load_never_mixes_tables(
    start_gateway: GatewayFactory, upstream: MockUpstream, tmp_path: Path
) -> None:
    gateway = start_gateway(table(upstream, 0))
    path = tmp_path / "mini-llm.yaml"

    async def run() -> tuple[list[tuple[int, str, str]], int]:
        stop = asyncio.Event()
        results: list[tuple[int, str, str]] = []

        async def client(http: httpx.AsyncClient) -> None:
            while not stop.is_set():
                r = await http.post("/v1/chat/completions", json={"model": "m"})
                doc = r.json() if r.status_code == 200 else {}
                results.append((r.status_code, doc.get("model", ""), doc.get("x_table", "")))

        async def stream(http: httpx.AsyncClient) -> None:
            async with http.stream(
                "POST", "/v1/chat/completions", json={"model": "m", "stream": True}
            ) as r:
                body = await r.aread()
                results.append((r.status_code, "stream", body.decode()[-14:]))

        async def edit() -> int:
            for version in range(1, 21):
                await asyncio.sleep(0.15)
                path.write_text(table(upstream, version))
            await asyncio.sleep(0.8)
            stop.set()
            return 20

        upstream.chunk_pause_s = 0.2
        try:
            async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
                streamer = asyncio.create_task(stream(http))
                edits, *_ = await asyncio.gather(edit(), *(client(http) for _ in range(16)))
                await streamer
        finally:
            upstream.chunk_pause_s = 0.0
        return results, edits

    results, _ = asyncio.run(run())
    assert len(results) > 100
    assert all(status == 200 for status, _, _ in results)
    assert ("stream", "data: [DONE]\n\n") in [(m, t) for _, m, t in results]
    versions = set()
    for _, model, tag in results:
        if model == "stream":
            continue
        assert model == f"model-{tag}", "a response mixed two tables"
        versions.add(tag)
    assert "v20" in versions and len(versions) >= 5
    assert generation(gateway) >= 6


@pytest.mark.parametrize("reload_setting", ["false"])
def test_reload_false_in_the_file_disables_watching(
    start_gateway: GatewayFactory, upstream: MockUpstream, tmp_path: Path, reload_setting: str
) -> None:
    text = table(upstream, 1).replace("server:\n", f"server:\n  reload: {reload_setting}\n")
    gateway = start_gateway(text)
    (tmp_path / "mini-llm.yaml").write_text(table(upstream, 2))
    time.sleep(1.5)  # a change would be in effect by now if the file were watched
    assert served_model(gateway) == "model-v1"


def with_reload(text: str, on: bool) -> str:
    return text.replace("server:\n", f"server:\n  reload: {'true' if on else 'false'}\n", 1)


def test_reload_turned_on_by_sighup_starts_watching(
    start_gateway: GatewayFactory, upstream: MockUpstream, tmp_path: Path
) -> None:
    path = tmp_path / "mini-llm.yaml"
    gateway = start_gateway(with_reload(table(upstream, 1), False))
    path.write_text(with_reload(table(upstream, 2), True))
    gateway.signal(signal.SIGHUP)
    wait_for(lambda: generation(gateway) == 2)
    assert gateway.wait_stderr("server.reload is now true: watching mini-llm.yaml")
    path.write_text(with_reload(table(upstream, 3), True))  # no SIGHUP this time
    assert wait_for(lambda: served_model(gateway) == "model-v3", timeout=2) < 1.5
    assert generation(gateway) == 3


def test_reload_turned_off_by_sighup_stops_watching(
    start_gateway: GatewayFactory, upstream: MockUpstream, tmp_path: Path
) -> None:
    path = tmp_path / "mini-llm.yaml"
    gateway = start_gateway(with_reload(table(upstream, 1), True))
    path.write_text(with_reload(table(upstream, 2), False))
    gateway.signal(signal.SIGHUP)  # or the watcher itself: both take the new table
    wait_for(lambda: generation(gateway) >= 2)  # the watcher may reload too
    assert gateway.wait_stderr("server.reload is now false: no longer watching mini-llm.yaml")
    path.write_text(with_reload(table(upstream, 3), False))
    time.sleep(1.5)  # a change would be in effect by now if the file were watched
    assert served_model(gateway) == "model-v2"
    gateway.signal(signal.SIGHUP)  # still reloads on demand
    wait_for(lambda: served_model(gateway) == "model-v3")
