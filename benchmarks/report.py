"""Ratios against floor and direct from the same run, the target check, the markdown table."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Figures = dict[str, Any]


@dataclass(frozen=True)
class Target:
    """One of the issue's targets for mini-llm, checked against this run's figures."""

    label: str
    key: str  # a figure of the mini-llm column
    limit: float
    at_least: bool  # True: figure >= limit passes; False: figure <= limit passes
    unit: str


TARGETS = (
    Target("req/s vs floor", "rps_x_floor", 0.9, True, "x"),
    Target("c=1 added p50 vs floor's", "c1_added_x_floor", 1.2, False, "x"),
    Target("CPU per request vs floor", "cpu_x_floor", 1.15, False, "x"),
    Target("startup to first proxied answer", "startup_s", 0.5, False, "s"),
    Target("RSS idle", "rss_idle_mb", 50.0, False, "MB"),
    Target("time-to-first-chunk overhead vs direct", "ttfc_overhead_ms", 2.0, False, "ms"),
    Target("hot reload, file write to new table", "reload_ms", 1000.0, False, "ms"),
    Target("SDK Gateway.start() to healthy", "sdk_start_s", 0.5, False, "s"),
)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _diff(a: float | None, b: float | None) -> float | None:
    return a - b if a is not None and b is not None else None


def _rounds(r: Figures, key: str) -> list[float] | None:
    values = r.get("rounds", {}).get(key)
    return values if values and all(v is not None for v in values) else None


def _paired_ratio(r: Figures, ref: Figures, key: str, name: str) -> float | None:
    """Median over rounds of r/ref, each round paired with ref's; else the whole-run ratio.

    Rounds are interleaved, so round i of both was measured within seconds: a machine
    that got busier halfway through moves both sides of each pair, not the ratio. The
    per-round ratios are kept under `rounds[name]`, for their spread.
    """
    a, b = _rounds(r, key), _rounds(ref, key)
    if a is not None and b is not None and len(a) == len(b) and all(b):
        ratios = [x / y for x, y in zip(a, b, strict=True)]
        r.setdefault("rounds", {})[name] = ratios
        return statistics.median(ratios)
    return _ratio(r.get(key), ref.get(key))


def _added(r: Figures, direct: Figures) -> list[float] | None:
    a, d = _rounds(r, "c1_p50_ms"), _rounds(direct, "c1_p50_ms")
    if a is None or d is None or len(a) != len(d):
        return None
    return [x - y for x, y in zip(a, d, strict=True)]


def derive(results: dict[str, Figures], workers: int) -> None:
    """Add, in place, every figure that compares a contender with floor or direct."""
    ok = {name: r for name, r in results.items() if r.get("status") == "ok"}
    direct, floor = ok.get("direct", {}), ok.get("floor", {})
    floor_added = _added(floor, direct)
    for r in ok.values():
        for name, key, ref in (
            ("rps_x_floor", "rps", floor),
            ("rps_x_direct", "rps", direct),
            ("cpu_x_floor", "cpu_us_per_req", floor),
            ("stream_rps_x_floor", "stream_rps", floor),
        ):
            r[name] = _paired_ratio(r, ref, key, name)
        r["c1_added_ms"] = _diff(r.get("c1_p50_ms"), direct.get("c1_p50_ms"))
        r["ttfc_overhead_ms"] = _diff(r.get("ttfc_ms"), direct.get("ttfc_ms"))
        added = _added(r, direct)
        # A floor that adds (almost) nothing would make this ratio explode on timer noise.
        if added is not None:
            r["rounds"]["c1_added_ms"] = added
        if added is not None and floor_added is not None and min(floor_added) > 0.005:
            ratios = [x / y for x, y in zip(added, floor_added, strict=True)]
            r["rounds"]["c1_added_x_floor"] = ratios
            r["c1_added_x_floor"] = statistics.median(ratios)
        else:
            usable = (floor.get("c1_added_ms") or 0) > 0.005
            r["c1_added_x_floor"] = (
                _ratio(r["c1_added_ms"], floor.get("c1_added_ms")) if usable else None
            )
    # A/B of a hot-path change (--compare-src): the other tree against this one, per round.
    alt, single = ok.get("mini-llm-alt"), ok.get("mini-llm")
    if alt and single:
        for name, key in (("x_this_tree_rps", "rps"), ("x_this_tree_cpu", "cpu_us_per_req")):
            single[name] = _paired_ratio(single, alt, key, name)
    scaled, single = ok.get(f"mini-llm-w{workers}"), ok.get("mini-llm")
    if scaled and single:
        scaled["rps_x_1_worker"] = _paired_ratio(scaled, single, "rps", "rps_x_1_worker")
        scaled["stream_rps_x_1_worker"] = _paired_ratio(
            scaled, single, "stream_rps", "stream_rps_x_1_worker"
        )


def warnings(results: dict[str, Figures], meta: dict[str, Any]) -> list[str]:
    """What makes this run's figures less trustworthy than they look."""
    out = []
    if max(meta.get("background_cpu_pct", 0), meta.get("foreign_cpu_pct", 0)) > 10:
        out.append(
            f"other processes used {meta.get('foreign_cpu_pct', 0):.0f}% of the machine during "
            f"the run ({meta['background_cpu_pct']:.0f}% just before): expect noise, use more "
            "--rounds"
        )
    capped = load_capped(results)
    if capped is not None:
        out.append(capped + ("; install wrk" if meta["load_tool"] != "wrk" else ""))
    return out


def load_capped(results: dict[str, Figures]) -> str | None:
    """Why the throughput figures cannot be judged: direct not well above every proxy."""
    direct = results.get("direct", {}).get("rps")
    proxied = [r["rps"] for n, r in results.items() if n != "direct" and r.get("rps")]
    # Direct shows what load generator + mock can do; a proxy close to it was not the limit.
    if not direct or not proxied:
        return "no req/s for direct or for any proxy"
    if direct < 1.5 * max(proxied):
        return (
            f"direct reached only {direct:,.0f} req/s, under 1.5x the fastest proxy's "
            f"{max(proxied):,.0f}: the load generator or the mock may be the limit"
        )
    return None


# Targets measured under load: judged only when the load was not the limit.
_UNDER_LOAD = frozenset({"rps_x_floor", "c1_added_x_floor", "cpu_x_floor"})
MIN_ROUNDS = 3


def check_targets(results: dict[str, Figures], rounds: int) -> list[dict[str, Any]]:
    """Each target against mini-llm's medians; `pass` None (with `why`) when not judged."""
    mini = results.get("mini-llm", {})
    if mini.get("status") != "ok":
        return []
    capped = load_capped(results)
    out = []
    for t in TARGETS:
        value = mini.get(t.key)
        why = None
        if value is None:
            why = "not measured"
        elif t.key in _UNDER_LOAD and rounds < MIN_ROUNDS:
            why = f"not judged: {rounds} round(s), a verdict needs the median of {MIN_ROUNDS}"
        elif t.key in _UNDER_LOAD and capped is not None:
            why = f"not judged: {capped}"
        passed = None
        if why is None and value is not None:
            passed = value >= t.limit if t.at_least else value <= t.limit
        op = "≥" if t.at_least else "≤"
        out.append(
            {
                "target": t.label,
                "key": t.key,
                "limit": f"{op} {t.limit:g} {t.unit}",
                "value": value,
                "spread": spread(mini, t.key),
                "pass": passed,
                "why": why,
            }
        )
    return out


_TO = "\u2013"  # an en dash: min-max

# Figures measured in each round, or sampled several times: shown with their min-max.
_SAMPLES = {"ttfc_ms": "ttfc_samples_ms", "reload_ms": "reload_samples_ms"}


def spread(r: Figures, key: str) -> tuple[float, float] | None:
    """(min, max) of a figure over rounds (or samples), when there were several."""
    values = r.get("rounds", {}).get(key)
    if values is None and key in _SAMPLES:
        values = r.get(_SAMPLES[key])
    values = [v for v in values or () if v is not None]
    return (min(values), max(values)) if len(values) > 1 else None


def _num(key: str, fmt: str) -> Callable[[Figures], str]:
    def shown(r: Figures) -> str:
        if r.get(key) is None:
            return "—"
        text = format(r[key], fmt)
        extent = spread(r, key)
        if extent is not None:
            text += f" ({format(extent[0], fmt)}{_TO}{format(extent[1], fmt)})"
        return text

    return shown


def _p50_p99(r: Figures) -> str:
    p50, p99 = r.get("p50_ms"), r.get("p99_ms")
    return "—" if p50 is None or p99 is None else f"{p50:.2f} / {p99:.2f}"


_ROWS: tuple[tuple[str, str, Callable[[Figures], str]], ...] = (
    ("req/s, JSON, c=N", "rps", _num("rps", ",.0f")),
    ("  x floor", "rps_x_floor", _num("rps_x_floor", ".2f")),
    ("  x direct", "rps_x_direct", _num("rps_x_direct", ".2f")),
    ("p50 / p99 ms, c=N", "p50_ms", _p50_p99),
    ("p50 ms, c=1", "c1_p50_ms", _num("c1_p50_ms", ".3f")),
    ("  added vs direct, ms", "c1_added_ms", _num("c1_added_ms", ".3f")),
    ("  added x floor's", "c1_added_x_floor", _num("c1_added_x_floor", ".2f")),
    ("CPU µs / request", "cpu_us_per_req", _num("cpu_us_per_req", ".0f")),
    ("  x floor", "cpu_x_floor", _num("cpu_x_floor", ".2f")),
    ("stream req/s, c=N", "stream_rps", _num("stream_rps", ",.0f")),
    ("  x floor", "stream_rps_x_floor", _num("stream_rps_x_floor", ".2f")),
    ("CPU µs / stream", "cpu_us_per_stream", _num("cpu_us_per_stream", ".0f")),
    ("TTFC slow stream (first content), ms", "ttfc_ms", _num("ttfc_ms", ".2f")),
    ("  overhead vs direct, ms", "ttfc_overhead_ms", _num("ttfc_overhead_ms", ".2f")),
    ("RSS idle, MB", "rss_idle_mb", _num("rss_idle_mb", ".1f")),
    ("RSS after load, MB", "rss_after_mb", _num("rss_after_mb", ".1f")),
    ("startup to 1st answer, s", "startup_s", _num("startup_s", ".3f")),
    ("hot reload, ms", "reload_ms", _num("reload_ms", ".0f")),
    ("SDK Gateway.start() to healthy, s", "sdk_start_s", _num("sdk_start_s", ".3f")),
    ("processes", "processes", _num("processes", "d")),
    ("CPU % while idle", "idle_cpu_pct", _num("idle_cpu_pct", ".1f")),
    ("req/s x 1 worker", "rps_x_1_worker", _num("rps_x_1_worker", ".2f")),
    ("req/s x mini-llm-alt (A/B)", "x_this_tree_rps", _num("x_this_tree_rps", ".3f")),
    ("CPU / request x mini-llm-alt (A/B)", "x_this_tree_cpu", _num("x_this_tree_cpu", ".3f")),
    ("load errors", "errors", _num("errors", "d")),
)


def markdown(results: dict[str, Figures], meta: dict[str, Any]) -> str:
    ok = [name for name, r in results.items() if r.get("status") == "ok"]
    lines = [
        f"mini-llm benchmark — {meta['load_tool']}, {meta['connections']} connections, "
        f"{meta['duration_s']:g} s per phase x {meta['rounds']} interleaved round(s), "
        f"{meta['cpu_plan']}; other processes used {meta.get('foreign_cpu_pct', 0):.0f}% "
        "of the machine meanwhile",
        f"machine: {meta.get('cpus')} cores, {meta.get('cpu_model')}; Python "
        f"{meta.get('python')}, aiohttp {meta.get('aiohttp')}; {meta.get('time')}. Figures are "
        f"medians over rounds (or samples), with min{_TO}max in brackets.",
        "",
        "| figure | " + " | ".join(ok) + " |",
        "|---|" + "---:|" * len(ok),
    ]
    lines[1:1] = [f"> warning: {w}" for w in meta.get("warnings", [])]
    for label, key, fmt in _ROWS:
        if all(results[name].get(key) is None for name in ok):
            continue
        lines.append(f"| {label} | " + " | ".join(fmt(results[name]) for name in ok) + " |")
    lines.append("")
    for name, r in results.items():
        if r.get("status") != "ok":
            lines.append(f"- {name}: {r.get('status')}: {r.get('reason')}")
        elif r.get("note"):
            lines.append(f"- {name}: {r['note']}")
    targets = meta.get("targets") or []
    if targets:
        lines += ["", "| mini-llm target | limit | measured | |", "|---|---|---:|---|"]
        for t in targets:
            value = "—" if t["value"] is None else f"{t['value']:.3g}"
            if t.get("spread"):
                value += f" ({t['spread'][0]:.3g}{_TO}{t['spread'][1]:.3g})"
            verdict = {True: "pass", False: "**MISS**", None: t.get("why") or "n/a"}[t["pass"]]
            lines.append(f"| {t['target']} | {t['limit']} | {value} | {verdict} |")
    return "\n".join(lines)
