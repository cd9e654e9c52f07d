"""The phases every contender goes through, and how rounds of load add up to one figure."""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field

import aiohttp

from benchmarks.contenders import Running
from benchmarks.load import Load, LoadResult
from benchmarks.probes import (
    CHAT,
    chat_body,
    median,
    one_request,
    reload_latency,
    sdk_start,
    time_to_first_chunk,
)
from benchmarks.procs import cpu_seconds, process_tree, rss_bytes
from benchmarks.report import Figures

MB = 1024 * 1024


@dataclass(frozen=True)
class Plan:
    """Phase lengths and sample counts of this run."""

    connections: int
    duration_s: float
    c1_s: float
    ttfc_samples: int
    reload_samples: int
    workers: int


@dataclass
class Subject:
    """One started contender and what its phases measured so far."""

    run: Running
    notes: list[str] = field(default_factory=list)
    fig: Figures = field(default_factory=dict)
    results: dict[str, list[LoadResult]] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)
    cpu_rounds: dict[str, list[float | None]] = field(default_factory=dict)  # µs/request
    broken: set[str] = field(default_factory=set)
    clock: tuple[float, float] = (0.0, 0.0)  # (monotonic, process CPU) when rounds began

    @property
    def pid(self) -> int | None:
        return self.run.proc.pid if self.run.proc is not None else None

    @property
    def url(self) -> str:
        return self.run.base_url + CHAT


def _bodies(run: Running) -> dict[str, bytes]:
    return {
        "json": chat_body(run.model, stream=False),
        "c1": chat_body(run.model, stream=False),
        "stream": chat_body(run.model, stream=True, note="mock-chunks=8"),
    }


async def prepare(s: Subject, load: Load, plan: Plan) -> None:
    """Idle figures right after startup, then a warm-up that fills the upstream pool."""
    s.notes += [s.run.note] if s.run.note else []
    s.fig.update(status="ok", startup_s=s.run.startup_s, **s.run.extra)
    await asyncio.sleep(0.3)  # idle means idle: let startup work (imports, GC) settle
    if s.pid is not None:
        s.fig["rss_idle_mb"] = rss_bytes(s.pid) / MB
        s.fig["processes"] = len(process_tree(s.pid))
        if s.run.name.startswith("mini-llm-w") and s.fig["processes"] < plan.workers:
            s.notes.append(
                f"only {s.fig['processes']} process(es) running: --workers not in effect"
            )
    await load.run(s.url, s.run.headers, _bodies(s.run)["json"], plan.connections, 1.0)
    s.clock = (time.monotonic(), cpu_seconds(s.pid) if s.pid else 0.0)


async def load_round(s: Subject, load: Load, plan: Plan) -> None:
    """One round of the three load phases; rounds of all contenders are interleaved."""
    phases = {"json": plan.connections, "c1": 1, "stream": plan.connections}
    for label, body in _bodies(s.run).items():
        if label in s.broken:
            continue
        seconds = plan.c1_s if label == "c1" else plan.duration_s
        before = cpu_seconds(s.pid) if s.pid else 0.0
        result = await load.run(s.url, s.run.headers, body, phases[label], seconds)
        ok = result.requests - result.errors
        if s.pid:
            used = cpu_seconds(s.pid) - before
            s.cpu_s[label] = s.cpu_s.get(label, 0.0) + used
            s.cpu_rounds.setdefault(label, []).append(used / ok * 1e6 if ok > 0 else None)
        s.results.setdefault(label, []).append(result)
        if ok <= 0:
            # Keep the other figures: a gateway may serve JSON but fail every stream.
            status, text = await one_request(s.run.base_url, s.run.headers, body)
            s.notes.append(f"{label} phase failed: HTTP {status} {text[:120]}")
            s.broken.add(label)


def _aggregate(s: Subject) -> None:
    fig = s.fig
    fig["errors"] = sum(r.errors for rs in s.results.values() for r in rs)
    fig["requests"] = {k: sum(r.requests for r in rs) for k, rs in s.results.items()}
    for label, rs in s.results.items():
        ok = sum(r.requests - r.errors for r in rs)
        errors = sum(r.errors for r in rs)
        if label in s.broken or ok <= 0:
            continue
        if errors > 0.01 * (ok + errors):
            s.notes.append(f"{label}: {errors} of {ok + errors} requests failed")
        # Median over rounds: one round disturbed by a neighbour does not move the figure.
        rps = statistics.median(r.rps for r in rs)
        p50 = statistics.median(r.p50_ms for r in rs)
        p99 = statistics.median(r.p99_ms for r in rs)
        # Per-round values let report.derive pair each round with floor's and direct's
        # round, measured seconds apart, instead of comparing whole-run medians.
        rounds = fig.setdefault("rounds", {})
        cpu_rounds = s.cpu_rounds.get(label)
        if cpu_rounds and all(v is not None for v in cpu_rounds):
            cpu: float | None = statistics.median(v for v in cpu_rounds if v is not None)
        else:
            cpu = s.cpu_s[label] / ok * 1e6 if label in s.cpu_s else None
        if label == "json":
            fig.update(rps=rps, p50_ms=p50, p99_ms=p99, cpu_us_per_req=cpu)
            rounds.update(rps=[r.rps for r in rs], cpu_us_per_req=cpu_rounds)
        elif label == "c1":
            fig["c1_p50_ms"] = p50
            rounds["c1_p50_ms"] = [r.p50_ms for r in rs]
        else:
            fig.update(stream_rps=rps, stream_p50_ms=p50, stream_p99_ms=p99)
            fig["cpu_us_per_stream"] = cpu
            rounds.update(stream_rps=[r.rps for r in rs], cpu_us_per_stream=cpu_rounds)


async def finish(s: Subject, plan: Plan) -> Figures:
    """Aggregate the rounds, then the single-request probes (TTFC, hot reload)."""
    _aggregate(s)
    if s.pid is not None:
        s.fig["rss_after_mb"] = rss_bytes(s.pid) / MB
        # CPU burnt while the others were measured: an idle contender that keeps working
        # steals from whoever shares its core.
        busy = cpu_seconds(s.pid) - s.clock[1] - sum(s.cpu_s.values())
        loaded = sum(r.duration_s for rs in s.results.values() for r in rs)
        idle_wall = time.monotonic() - s.clock[0] - loaded
        s.fig["idle_cpu_pct"] = 100 * max(0.0, busy) / idle_wall if idle_wall > 1 else None
    run = s.run
    try:
        ttfc = await time_to_first_chunk(
            run.base_url, run.headers, run.model, plan.ttfc_samples, delay_ms=50
        )
        s.fig["ttfc_ms"], s.fig["ttfc_samples_ms"] = median(ttfc), ttfc
    except (RuntimeError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
        s.notes.append(f"time to first chunk: {exc}"[:200])
    if run.config is not None and run.render is not None:
        reloads = await reload_latency(
            run.base_url, run.headers, run.model, run.config, run.render, plan.reload_samples
        )
        s.fig["reload_samples_ms"] = reloads
        done = [r for r in reloads if r is not None]
        # A reload that never showed up within the timeout is a failure, not a fast reload.
        s.fig["reload_ms"] = median(done) if len(done) == len(reloads) else None
        if len(done) != len(reloads):
            s.notes.append("a hot reload did not take effect within 5 s")
    if run.name == "mini-llm" and run.config is not None:
        starts = await asyncio.to_thread(sdk_start, run.config, plan.reload_samples * 2)
        s.fig["sdk_start_s"], s.fig["sdk_start_samples_s"] = median(starts), starts
    s.fig["note"] = "; ".join(s.notes)
    return s.fig
