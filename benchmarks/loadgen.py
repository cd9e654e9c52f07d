"""Built-in closed-loop HTTP load generator (aiohttp), used when wrk is not installed."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import aiohttp


async def _worker(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: dict[str, str],
    deadline: float,
    latencies: list[float],
    errors: list[int],
) -> None:
    while (start := time.perf_counter()) < deadline:
        try:
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                ok = resp.status < 400
        except (aiohttp.ClientError, asyncio.TimeoutError):
            ok = False
        end = time.perf_counter()
        # Like wrk: only requests completed within the run count, errors are counted apart.
        if end > deadline:
            return
        if ok:
            latencies.append(end - start)
        else:
            errors.append(1)


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q / 100.0 * len(sorted_values)))]


async def run(
    url: str, body: bytes, headers: dict[str, str], connections: int, duration: float
) -> dict[str, float]:
    latencies: list[float] = []
    errors: list[int] = []
    # Exactly `connections` keep-alive connections, one per worker, as wrk -c does.
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, auto_decompress=False
    ) as session:
        began = time.perf_counter()
        deadline = began + duration
        await asyncio.gather(
            *(
                _worker(session, url, body, headers, deadline, latencies, errors)
                for _ in range(connections)
            )
        )
        elapsed = max(time.perf_counter(), deadline) - began
    latencies.sort()
    return {
        "requests": len(latencies) + len(errors),
        "errors": len(errors),
        "duration_s": elapsed,
        "p50_ms": _percentile(latencies, 50) * 1000,
        "p90_ms": _percentile(latencies, 90) * 1000,
        "p99_ms": _percentile(latencies, 99) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--body-file", required=True, type=Path)
    parser.add_argument("--header", action="append", default=[], help="NAME: VALUE")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    headers = dict(h.split(": ", 1) for h in args.header)
    result = asyncio.run(
        run(args.url, args.body_file.read_bytes(), headers, args.connections, args.duration)
    )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
