"""`mini-llm top`: a live view of a running gateway, from its /metrics and /health.

Rates and latencies are over the last interval: two scrapes apart, so a quiet gateway
shows dashes rather than figures from an hour ago. Latency quantiles come from the
histogram buckets, interpolated within a bucket as Prometheus' histogram_quantile does.
"""

from __future__ import annotations

import http.client
import math
import os
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .client import EXIT_FAILED, EXIT_OK, Gateway, Unreachable

Labels = tuple[tuple[str, str], ...]
Samples = dict[str, dict[Labels, float]]


@dataclass(frozen=True)
class Scrape:
    """One look at the gateway."""

    at: float  # time.monotonic()
    samples: Samples
    health: Mapping[str, Any]


def parse(text: str) -> Samples:
    """Prometheus text -> sample name -> labels -> value."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[labels] = sample.value
    return samples


def fetch(gateway: Gateway) -> Scrape:
    """One look: /metrics and /health, with the gateway key when there is one."""
    try:
        connection, response = gateway.open("GET", "/metrics")
        try:
            text = response.read().decode()
        except (OSError, http.client.HTTPException, UnicodeDecodeError) as exc:
            raise Unreachable(str(exc) or type(exc).__name__) from None
        finally:
            connection.close()
        status, health = gateway.get_json("/health")
    except Unreachable as exc:
        raise Unreachable(f"cannot reach {gateway.url}: {exc}") from None
    if response.status != 200:
        raise Unreachable(f"{gateway.url}/metrics answered {response.status}")
    if status != 200 or not isinstance(health, dict):
        raise Unreachable(f"{gateway.url}/health answered {status}")
    return Scrape(time.monotonic(), parse(text), health)


def quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The q-quantile from cumulative bucket counts (upper bound -> count); None if empty."""
    bounds = sorted(buckets)
    if not bounds:
        return None
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower  # as histogram_quantile: the highest finite bound
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


@dataclass
class RouteRow:
    requests: float = 0.0
    errors: float = 0.0
    providers: set[str] = field(default_factory=set)
    duration: dict[float, float] = field(default_factory=lambda: defaultdict(float))
    first_byte: dict[float, float] = field(default_factory=lambda: defaultdict(float))


def _delta(now: Samples, before: Samples, name: str) -> Iterable[tuple[dict[str, str], float]]:
    old = before.get(name, {})
    for labels, value in now.get(name, {}).items():
        change = value - old.get(labels, 0.0)
        if change < 0:  # a restarted gateway (or worker): count from zero
            change = value
        yield dict(labels), change


def routes(now: Samples, before: Samples) -> dict[str, RouteRow]:
    rows: dict[str, RouteRow] = defaultdict(RouteRow)
    for labels, change in _delta(now, before, "mini_llm_requests_total"):
        row = rows[labels["route"]]
        row.requests += change
        if change and labels["provider"] != "-":
            row.providers.add(labels["provider"])
        if labels["status"].isdigit() and int(labels["status"]) >= 400:
            row.errors += change
    for name, attribute in (
        ("mini_llm_request_duration_seconds_bucket", "duration"),
        ("mini_llm_time_to_first_byte_seconds_bucket", "first_byte"),
    ):
        for labels, change in _delta(now, before, name):
            getattr(rows[labels["route"]], attribute)[float(labels["le"])] += change
    return dict(rows)


def _rate(value: float, seconds: float) -> str:
    return f"{value / seconds:.1f}" if seconds > 0 else "-"


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def render(url: str, before: Scrape, now: Scrape) -> RenderableType:
    """One frame from two scrapes."""
    seconds = now.at - before.at
    samples = now.samples
    health = now.health
    config = health.get("config") or {}
    in_flight = sum(samples.get("mini_llm_in_flight_requests", {}).values())
    header = Text.assemble(
        ("mini-llm top ", "bold"),
        f"{url}  version {health.get('version', '?')}  ",
        f"config generation {config.get('generation', '?')}  ",
        ("in flight ", "bold"),
        f"{in_flight:.0f}  ",
        f"(over the last {seconds:.1f} s)",
    )
    parts: list[RenderableType] = [header]
    if config.get("last_error"):
        parts.append(Text(f"last reload failed: {config['last_error']}", style="red"))

    table = Table(title="routes", title_justify="left", expand=False)
    for column in ("route", "providers", "req/s", "errors", "p50", "p95", "TTFB p50"):
        table.add_column(column, justify="left" if column in ("route", "providers") else "right")
    for name, row in sorted(routes(samples, before.samples).items()):
        errors = f"{row.errors / row.requests:.0%}" if row.requests else "-"
        table.add_row(
            name,
            ", ".join(sorted(row.providers)) or "-",
            _rate(row.requests, seconds),
            errors,
            _ms(quantile(0.5, row.duration)),
            _ms(quantile(0.95, row.duration)),
            _ms(quantile(0.5, row.first_byte)),
        )
    parts.append(table)

    tokens: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for labels, change in _delta(samples, before.samples, "mini_llm_tokens_total"):
        tokens[(labels["provider"], labels["model"])][labels["type"]] += change
    usage = Table(title="tokens/s", title_justify="left")
    for column in ("provider", "model", "input", "output", "cached input"):
        usage.add_column(column, justify="left" if column in ("provider", "model") else "right")
    for (provider, model), kinds in sorted(tokens.items()):
        usage.add_row(
            provider,
            model,
            *(_rate(kinds[k], seconds) for k in ("input", "output", "cached_input")),
        )
    parts.append(usage)

    outcomes: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for labels, change in _delta(samples, before.samples, "mini_llm_upstream_tries_total"):
        outcomes[labels["provider"]][labels["outcome"]] += change
    resting = {
        (dict(labels)["provider"], dict(labels)["key"])
        for labels, value in samples.get("mini_llm_key_resting", {}).items()
        if value
    }
    providers = Table(title="providers", title_justify="left")
    for column in ("provider", "state", "tries/s", "failed tries", "keys"):
        providers.add_column(column, justify="right" if column == "tries/s" else "left")
    for name, info in sorted((health.get("providers") or {}).items()):
        tried = outcomes.get(name, {})
        failed = ", ".join(
            f"{outcome} {count:.0f}"
            for outcome, count in sorted(tried.items())
            if outcome != "ok" and count
        )
        keys = []
        for key in info.get("key_states", []):
            rests = key.get("state") == "resting" or (name, key.get("id")) in resting
            keys.append(f"{key.get('id')} resting" if rests else f"{key.get('id')} ok")
        providers.add_row(
            name,
            "enabled" if info.get("enabled") else "disabled",
            _rate(sum(tried.values()), seconds),
            failed or "-",
            ", ".join(keys) or "-",
        )
    parts.append(providers)
    return Group(*parts)


def run(url: str | None, *, once: bool = False, interval: float = 1.0) -> int:
    """Show the gateway until Ctrl-C; with `once` (or when not a terminal), one frame."""
    gateway = Gateway.find(url, os.environ, timeout_s=5.0)
    console = Console(width=None if sys.stdout.isatty() else 160, highlight=False, emoji=False)
    try:
        before = fetch(gateway)
        if once or not sys.stdout.isatty():
            time.sleep(interval)
            console.print(render(gateway.url, before, fetch(gateway)))
            return EXIT_OK
        with Live(Text("collecting…"), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                now = fetch(gateway)
                live.update(render(gateway.url, before, now), refresh=True)
                before = now
    except Unreachable as exc:
        print(f"mini-llm top: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_OK
