"""Drive one fixed-connection, fixed-duration load phase with wrk, or the built-in generator."""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from benchmarks.procs import pinned

# wrk reports through this hook instead of its human summary, so nothing is scraped from
# text; latency percentiles come from wrk's own histogram (microseconds).
_WRK_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"errors":%d,"status_errors":%d,"duration_s":%.6f,' ..
    '"p50_ms":%.4f,"p90_ms":%.4f,"p99_ms":%.4f}\n',
    summary.requests, e.connect + e.read + e.write + e.status + e.timeout, e.status,
    summary.duration / 1e6, latency:percentile(50) / 1e3, latency:percentile(90) / 1e3,
    latency:percentile(99) / 1e3))
end
"""
_REPO_ROOT = str(Path(__file__).resolve().parent.parent)
INSTALL_HINT = "apt-get install -y wrk (Debian/Ubuntu) for the reference load generator"


@dataclass(frozen=True)
class LoadResult:
    """Figures of one load phase."""

    tool: str
    connections: int
    requests: int
    errors: int
    duration_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return max(0, self.requests - self.errors) / self.duration_s if self.duration_s else 0.0


@dataclass(frozen=True)
class Load:
    """How load is generated in this run (wrk or built-in) and where it runs."""

    workdir: Path
    cpus: str | None
    use_wrk: bool

    @classmethod
    def detect(cls, workdir: Path, cpus: str | None, force_builtin: bool = False) -> Load:
        return cls(workdir, cpus, use_wrk=not force_builtin and shutil.which("wrk") is not None)

    @property
    def tool(self) -> str:
        return "wrk" if self.use_wrk else "builtin-aiohttp"

    async def run(
        self, url: str, headers: dict[str, str], body: bytes, connections: int, duration_s: float
    ) -> LoadResult:
        headers = {"Content-Type": "application/json", **headers}
        if self.use_wrk:
            raw = await self._wrk(url, headers, body, connections, duration_s)
        else:
            raw = await self._builtin(url, headers, body, connections, duration_s)
        return LoadResult(
            tool=self.tool,
            connections=connections,
            requests=int(raw["requests"]),
            errors=int(raw["errors"]),
            duration_s=float(raw["duration_s"]),
            p50_ms=float(raw["p50_ms"]),
            p90_ms=float(raw["p90_ms"]),
            p99_ms=float(raw["p99_ms"]),
        )

    async def _wrk(
        self, url: str, headers: dict[str, str], body: bytes, connections: int, duration_s: float
    ) -> dict[str, float]:
        lines = ['wrk.method = "POST"', f"wrk.body = [==[{body.decode()}]==]"]
        lines += [f"wrk.headers[ [==[{k}]==] ] = [==[{v}]==]" for k, v in headers.items()]
        script = self.workdir / f"wrk-{abs(hash((url, body, tuple(headers.items()))))}.lua"
        script.write_text("\n".join(lines) + _WRK_DONE)
        # wrk takes whole seconds; one thread is plenty for one core of a Python gateway.
        seconds = max(1, math.ceil(duration_s))
        cmd = [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
        ]
        return await _json_line(pinned(cmd, self.cpus), "WRKJSON ", seconds + 30)

    async def _builtin(
        self, url: str, headers: dict[str, str], body: bytes, connections: int, duration_s: float
    ) -> dict[str, float]:
        body_file = self.workdir / f"body-{abs(hash(body))}.json"
        body_file.write_bytes(body)
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.loadgen",
            "--url",
            url,
            "--body-file",
            str(body_file),
        ]
        cmd += [f"--connections={connections}", f"--duration={duration_s}"]
        for k, v in headers.items():
            cmd += ["--header", f"{k}: {v}"]
        return await _json_line(pinned(cmd, self.cpus), "{", duration_s + 60)


async def _json_line(cmd: list[str], prefix: str, timeout: float) -> dict[str, float]:
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=_REPO_ROOT
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"load generator timed out: {' '.join(cmd)}") from None
    except BaseException:  # Ctrl-C: do not leave wrk hammering a gateway that is going away
        proc.kill()
        raise
    for line in out.decode().splitlines():
        if line.startswith(prefix):
            data: dict[str, float] = json.loads(line.removeprefix("WRKJSON "))
            return data
    raise RuntimeError(
        f"load generator gave no result (exit {proc.returncode}): {err.decode()[-300:]}"
    )
