"""Single-request probes: first proxied answer, time to first chunk, hot-reload latency."""

from __future__ import annotations

import asyncio
import json
import os
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

from benchmarks.procs import Proc, SetupError

CHAT = "/v1/chat/completions"


def chat_body(model: str, stream: bool, note: str = "") -> bytes:
    """A small, realistic chat request; `note` carries mock directives (mock-delay-ms=...)."""
    content = f"Say hello in five words. {note}".strip()
    body = {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "stream": stream,
        "max_tokens": 32,
    }
    return json.dumps(body, separators=(",", ":")).encode()


def _session(force_close: bool = False) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=1, force_close=force_close)
    return aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=10), auto_decompress=False
    )


async def first_answer(
    base_url: str, headers: dict[str, str], model: str, proc: Proc | None, timeout: float
) -> tuple[float, str]:
    """Poll until one chat completion comes back 200: (perf_counter of that moment, body)."""
    body = chat_body(model, stream=False)
    deadline = time.perf_counter() + timeout
    last = "no answer"
    async with _session(force_close=True) as session:
        while time.perf_counter() < deadline:
            if proc is not None and proc.proc.returncode is not None:
                raise SetupError(f"{proc.name} exited with {proc.proc.returncode}; {proc.tail()}")
            try:
                async with session.post(base_url + CHAT, data=body, headers=_json(headers)) as resp:
                    text = await resp.text()
                    if resp.status == 200:
                        return time.perf_counter(), text
                    last = f"HTTP {resp.status}: {text[:200]}"
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                last = type(exc).__name__
            # Short pause: the startup figure is only as fine as this polling step.
            await asyncio.sleep(0.002)
    tail = f"; {proc.tail()}" if proc is not None else ""
    raise SetupError(f"no proxied answer within {timeout:.0f}s (last: {last}){tail}")


async def one_request(base_url: str, headers: dict[str, str], body: bytes) -> tuple[int, str]:
    """One chat request, for reporting what a failing phase got back."""
    try:
        async with (
            _session(force_close=True) as session,
            session.post(base_url + CHAT, data=body, headers=_json(headers)) as resp,
        ):
            return resp.status, (await resp.read()).decode("utf-8", "replace")
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        return 0, type(exc).__name__


def _json(headers: dict[str, str]) -> dict[str, str]:
    return {"Content-Type": "application/json", **headers}


# A chunk with text in it: OpenAI's `"content": "x...` (not the empty role chunk's).
_CONTENT = re.compile(rb'"content":\s*"[^"]')


async def time_to_first_chunk(
    base_url: str, headers: dict[str, str], model: str, samples: int, delay_ms: int
) -> list[float]:
    """Milliseconds from sending a slow-stream request to receiving its first content.

    First content, not first bytes: a gateway may hold a stream's role-only opening chunk
    until content follows (so a stream that fails first can be retried unseen), and the
    client's first visible token is what the figure is about.
    """
    body = chat_body(model, stream=True, note=f"mock-delay-ms={delay_ms} mock-chunks=3")
    out: list[float] = []
    async with _session() as session:
        for i in range(samples + 1):
            start = time.perf_counter()
            async with session.post(base_url + CHAT, data=body, headers=_json(headers)) as resp:
                seen = b""
                while not _CONTENT.search(seen):
                    chunk = await resp.content.readany()
                    if resp.status != 200 or not chunk:
                        raise RuntimeError(
                            f"slow stream answered HTTP {resp.status}: {seen[:200]!r}"
                        )
                    seen += chunk
                took = time.perf_counter() - start
                await resp.read()  # finish the stream so the next sample reuses the connection
            if i:  # the first sample opens the connection; it is not a steady-state figure
                out.append(took * 1000)
    return out


def _atomic_write(path: Path, text: str) -> None:
    # Save the way editors and Kubernetes do (write aside, rename over), so no watcher ever
    # sees a half-written file and the figure is the gateway's, not a parse-error retry.
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


async def reload_latency(
    base_url: str,
    headers: dict[str, str],
    model: str,
    config: Path,
    render: Callable[[str], str],
    samples: int,
    timeout: float = 5.0,
) -> list[float | None]:
    """Milliseconds from rewriting the routing table to every new connection seeing the new route.

    Each poll is a new connection, so with SO_REUSEPORT workers the polls spread across
    processes; the change counts as live from the first of `streak` consecutive new answers.
    """
    body = chat_body(model, stream=False)
    streak = 8
    out: list[float | None] = []
    async with _session(force_close=True) as session:
        for i in range(samples):
            target = f"upstream-model-{i + 2}"
            await asyncio.sleep(0.3)  # let the watcher settle after the previous change
            written = time.perf_counter()
            _atomic_write(config, render(target))
            run_start: float | None = None
            run = 0
            result: float | None = None
            while time.perf_counter() - written < timeout:
                sent = time.perf_counter()
                try:
                    async with session.post(
                        base_url + CHAT, data=body, headers=_json(headers)
                    ) as resp:
                        route = resp.headers.get("x-mini-llm-route", "")
                        answer = await resp.read()
                    new = route.endswith(":" + target) or f'"model":"{target}"'.encode() in answer
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    new = False
                if not new:
                    run_start, run = None, 0
                    await asyncio.sleep(0.001)
                    continue
                run_start = sent if run_start is None else run_start
                run += 1
                if run >= streak:
                    result = (run_start - written) * 1000
                    break
            out.append(result)
    return out


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def sdk_start(config: Path, samples: int) -> list[float]:
    """Seconds from `Gateway.start()` to healthy, each on a fresh child."""
    from mini_llm import Gateway

    took = []
    for _ in range(samples):
        # Bytecode caches allowed, as for every contender (see procs.Proc.spawn).
        gateway = Gateway(config=str(config), port=0, env={"PYTHONDONTWRITEBYTECODE": ""})
        started = time.perf_counter()
        gateway.start()
        took.append(time.perf_counter() - started)
        gateway.stop()
    return took
