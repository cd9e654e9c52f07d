"""Run every contender through the same phases against one mock upstream, side by side."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks import contenders as c
from benchmarks.load import INSTALL_HINT, Load
from benchmarks.measure import Plan, Subject, finish, load_round, prepare
from benchmarks.procs import ForeignLoad, Proc, SetupError, busy_percent
from benchmarks.report import Figures, check_targets, derive, markdown, warnings


@dataclass(frozen=True)
class Options:
    """Command-line choices (see __main__)."""

    duration_s: float
    connections: int
    only: frozenset[str] | None
    json_path: Path | None
    quick: bool
    rounds: int
    workers: int
    install: bool
    install_timeout_s: float
    builtin_load: bool
    alt_src: Path | None = None

    @property
    def plan(self) -> Plan:
        return Plan(
            connections=self.connections,
            duration_s=self.duration_s,
            c1_s=max(1.0, round(self.duration_s * 0.6)),
            ttfc_samples=5 if self.quick else 15,
            reload_samples=2 if self.quick else 3,
            workers=self.workers,
        )


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def plan_cpus() -> tuple[str | None, str | None, str | None, str]:
    """(gateway cpus, load+mock cpus, all cpus, description): gateway alone on one core."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2 or shutil.which("taskset") is None:
        why = "one core" if len(cpus) < 2 else "no taskset"
        return None, None, None, f"unpinned ({why})"
    gateway, load = str(cpus[0]), str(cpus[1])
    every = ",".join(map(str, cpus))
    return gateway, load, every, f"gateway on core {gateway}, load + mock on core {load}"


async def _mini_llm_version(base_url: str) -> str | None:
    try:
        async with aiohttp.ClientSession() as s, s.get(base_url + "/health") as resp:
            data = await resp.json()
            return str(data.get("version")) if isinstance(data, dict) else None
    except (aiohttp.ClientError, ValueError, asyncio.TimeoutError):
        return None


def _tool_version(cmd: list[str]) -> str | None:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (done.stdout + done.stderr).strip().splitlines()
    return text[0] if text else None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


async def run(opts: Options) -> dict[str, Any]:
    starters = c.registry(opts.workers, opts.alt_src)
    wanted = [
        n
        for n in starters
        if opts.only is None
        or n in opts.only
        or n in ("direct", "floor", "mini-llm-alt")
        or (n == "mini-llm-uvloop" and "mini-llm" in opts.only)
    ]
    unknown = (opts.only or frozenset()) - set(starters)
    if unknown:
        raise SystemExit(
            f"unknown contender(s): {', '.join(sorted(unknown))}; known: {', '.join(starters)}"
        )
    gateway_cpus, load_cpus, all_cpus, cpu_plan = plan_cpus()
    if load_cpus is not None:
        # Probes (startup, TTFC, reload) run in this process: keep it off the gateway's core.
        os.sched_setaffinity(0, {int(load_cpus)})
    # Other work on the box skews every figure; say how busy it was before we started.
    background = await asyncio.to_thread(busy_percent, 1.0)
    foreign = ForeignLoad()
    if background > 10:
        log(f"the machine is already {background:.0f}% busy: figures will be noisy")
    workdir = Path(tempfile.mkdtemp(prefix="mini-llm-bench-"))
    load = Load.detect(workdir, load_cpus, force_builtin=opts.builtin_load)
    if not load.use_wrk:
        log(f"wrk not found, using the built-in aiohttp load generator ({INSTALL_HINT})")
    mock: Proc | None = None
    plan = opts.plan
    results: dict[str, Figures] = {}
    subjects: dict[str, Subject] = {}

    async def failed(name: str, exc: BaseException) -> None:
        subject = subjects.pop(name)
        tail = subject.run.proc.tail() if subject.run.proc else ""
        log(f"{name}: failed: {exc!r} {tail}")
        results[name] = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"[:400]}
        # Stopped at once: a broken contender must not sit on the gateway core for the rest.
        await subject.run.stop()

    try:
        mock = await Proc.spawn(
            "mock",
            [sys.executable, "-m", "benchmarks.fake_provider"],
            cpus=load_cpus,
            cwd=str(c.REPO_ROOT),
        )
        mock_url = await mock.wait_url("mock listening on", 10)
        setting = c.Setting(
            mock_url, workdir, gateway_cpus, all_cpus, opts.install, opts.install_timeout_s, log
        )
        # All contenders stay up for the whole run so that their load rounds can be
        # interleaved: a noisy minute on a shared box then hits every column alike.
        for name in wanted:
            log(f"{name}: starting")
            try:
                running = await starters[name](setting)
            except SetupError as exc:
                log(f"{name}: skipped: {exc}")
                results[name] = {"status": "skipped", "reason": str(exc)}
                continue
            subjects[name] = Subject(running)
            log(f"{name}: up in {running.startup_s or 0:.3f}s at {running.base_url}")
            try:
                if name.startswith("mini-llm"):
                    running.extra["version"] = await _mini_llm_version(running.base_url)
                await prepare(subjects[name], load, plan)
            except Exception as exc:  # one broken contender must not lose the others' figures
                await failed(name, exc)
        for round_no in range(1, opts.rounds + 1):
            log(f"load round {round_no}/{opts.rounds}: {', '.join(subjects)}")
            for name, subject in list(subjects.items()):
                try:
                    await load_round(subject, load, plan)
                    if "json" in subject.broken:
                        raise RuntimeError("; ".join(subject.notes))
                except Exception as exc:
                    await failed(name, exc)
        for name, subject in list(subjects.items()):
            try:
                results[name] = await finish(subject, plan)
            except Exception as exc:
                await failed(name, exc)
    finally:
        # A second Ctrl-C (or a process-group SIGINT) must not cut the cleanup short and
        # leave gateways and the mock running; we are on our way out anyway.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        await asyncio.gather(*(s.run.stop() for s in subjects.values()))
        if mock is not None:
            await mock.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    results = {name: results[name] for name in wanted if name in results}
    foreign_pct = foreign.percent()  # every child is stopped and reaped by now
    derive(results, opts.workers)
    meta: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "load_tool": load.tool,
        "load_tool_version": _tool_version(["wrk", "--version"]) if load.use_wrk else None,
        "connections": opts.connections,
        "duration_s": opts.duration_s,
        "c1_duration_s": plan.c1_s,
        "rounds": opts.rounds,
        "cpu_plan": cpu_plan,
        "background_cpu_pct": round(background, 1),
        "foreign_cpu_pct": round(foreign_pct, 1),
        "cpu_model": _cpu_model(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "nginx": _tool_version(["nginx", "-v"]) if "nginx" in results else None,
        "targets": check_targets(results, opts.rounds),
    }
    meta["warnings"] = warnings(results, meta)
    return {"meta": meta, "contenders": results}


def main(opts: Options) -> int:
    report = asyncio.run(run(opts))
    print(markdown(report["contenders"], report["meta"]))
    path = opts.json_path or c.BENCH_DIR / "results" / time.strftime("bench-%Y%m%d-%H%M%S.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    log(f"wrote {path}")
    return 0
