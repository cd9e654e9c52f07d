"""Prometheus metrics: a registry per app, labelled children bound once, all workers in a scrape.

Label values are bounded by the routing table, never by what clients send: `api` is one of
the known endpoints or `other`, `route` an alias, `prefix:<prefix>`, `explicit` or
`default`, a token count's `model` an upstream model the table names or `other`.

With `serve --workers N` the workers share a folder (`PROMETHEUS_MULTIPROC_DIR`, made by
the supervisor, see metrics_dir.py) where prometheus_client keeps each process's values,
so whichever worker answers a scrape sums them all. State that lives in each worker (key
rests, the table's generation) is published there every second; a single process reads it
at scrape time instead.
"""

from __future__ import annotations

import asyncio
import os
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from .contract import METRICS_DIR_VARIABLE

if TYPE_CHECKING:
    from .pools import Snapshot
    from .proxy import Served
    from .routing import RoutingTable
    from .usage import Usage

_ENDPOINTS = (
    "chat/completions",
    "completions",
    "embeddings",
    "images/generations",
    "images/edits",
    "images/variations",
    "responses",
    "messages",
    "messages/count_tokens",
    "models",
    "moderations",
    "audio/transcriptions",
    "audio/translations",
    "audio/speech",
    "rerank",
)
_API_LABELS = {f"/v1/{path}": path.replace("/", "_") for path in _ENDPOINTS}
API_PATHS = tuple(_API_LABELS)  # the known endpoints' paths
OTHER = "other"

# LLM answers take from milliseconds (errors, embeddings) to minutes (long generations).
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_TTFB_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
PUBLISH_EVERY_S = 1.0


def api_label(path: str) -> str | None:
    """The `api` label of a request path: a known endpoint, `other` under /v1/, else None."""
    label = _API_LABELS.get(path)
    if label is None and path.startswith("/v1/"):
        return OTHER
    return label


def known_models(table: RoutingTable) -> frozenset[str]:
    """Upstream models the table names: alias targets and providers' advertised models."""
    named = {target.model for targets in table.aliases.values() for target in targets}
    named.update(model for provider in table.providers.values() for model in provider.models)
    return frozenset(named)


def key_resting(snapshot: Snapshot) -> dict[tuple[str, str], int]:
    """1 for each (provider, masked key) that rests, else 0; keys masked alike count once."""
    resting: dict[tuple[str, str], int] = {}
    for name, runtime in snapshot.runtimes.items():
        for state in runtime.keys.states():
            label = (name, state["id"])
            resting[label] = max(resting.get(label, 0), state["state"] == "resting")
    return resting


def circuit_open(snapshot: Snapshot) -> dict[str, int]:
    """1 for each provider whose circuit is not closed (open, or waiting for its probe)."""
    return {name: int(r.circuit.state != "closed") for name, r in snapshot.runtimes.items()}


class _Histogram:
    """One labelled histogram's observations since the last flush: a bucket index and a sum."""

    __slots__ = ("bounds", "child", "counts", "total")

    def __init__(self, child: Histogram, bounds: tuple[float, ...]) -> None:
        self.child = child
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def flush(self) -> None:
        """Into the prometheus child: per-bucket counts, as its own observe() keeps them."""
        counts = self.counts
        if not any(counts):
            return
        # prometheus_client (>= 0.20) keeps a histogram child's values in _buckets and _sum.
        buckets = self.child._buckets
        for index, count in enumerate(counts):
            if count:
                buckets[index].inc(count)
                counts[index] = 0
        self.child._sum.inc(self.total)
        self.total = 0.0


class _Series:
    """The values of one (api, route, provider), kept in plain numbers until a flush."""

    __slots__ = ("duration", "first_byte", "labels", "metrics", "overhead", "statuses")

    def __init__(self, metrics: Metrics, labels: tuple[str, str, str]) -> None:
        self.metrics = metrics
        self.labels = labels
        self.duration = _Histogram(metrics.duration.labels(*labels), _DURATION_BUCKETS)
        self.first_byte = _Histogram(metrics.first_byte.labels(*labels), _TTFB_BUCKETS)
        self.overhead: _Histogram | None = None  # only once a request reaches routing
        self.statuses: dict[int, int] = {}

    def add_overhead(self, child: Histogram) -> _Histogram:
        self.overhead = _Histogram(child, _OVERHEAD_BUCKETS)
        return self.overhead

    def flush(self) -> None:
        statuses, self.statuses = self.statuses, {}
        for status, count in statuses.items():
            self.metrics.requests.labels(*self.labels, str(status)).inc(count)
        self.duration.flush()
        self.first_byte.flush()
        if self.overhead is not None:
            self.overhead.flush()


class Metrics:
    """The gateway's series; `shared` when the process is one of several workers."""

    def __init__(
        self,
        current: Callable[[], Snapshot | None],
        in_flight: Callable[[], int],
        shared: bool | None = None,
    ) -> None:
        self._current = current  # the table in service, for state read at scrape time
        self._in_flight = in_flight
        self.shared = METRICS_DIR_VARIABLE in os.environ if shared is None else shared
        self.registry = registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter(
            "mini_llm_requests",
            "Requests under /v1/, by what the client got.",
            ("api", "route", "provider", "status"),
            registry=registry,
        )
        labels = ("api", "route", "provider")
        self.duration = Histogram(
            "mini_llm_request_duration_seconds",
            "From the request to the end of the answer (a stream's last byte).",
            labels,
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self.first_byte = Histogram(
            "mini_llm_time_to_first_byte_seconds",
            "From the request to the first bytes of the answer's body.",
            labels,
            buckets=_TTFB_BUCKETS,
            registry=registry,
        )
        self.overhead = Histogram(
            "mini_llm_overhead_seconds",
            "Time the gateway adds: a request's time minus the time spent waiting on upstream.",
            ("api",),
            buckets=_OVERHEAD_BUCKETS,
            registry=registry,
        )
        self.tries = Counter(
            "mini_llm_upstream_tries",
            "Upstream requests, by what each came to.",
            ("provider", "outcome"),
            registry=registry,
        )
        self.tokens = Counter(
            "mini_llm_tokens",
            "Tokens the upstream reported; type is input, output or cached_input (part of input).",
            ("provider", "model", "type"),
            registry=registry,
        )
        self.fallbacks = Counter(
            "mini_llm_fallbacks",
            "Moves of a fallback chain from one target's provider to the next.",
            ("route", "from_provider", "to_provider"),
            registry=registry,
        )
        self.reloads = Counter(
            "mini_llm_config_reloads",
            "Reloads of the routing table (not the first load); each worker counts its own.",
            ("result",),
            registry=registry,
        )
        for result in ("ok", "error"):
            self.reloads.labels(result)
        # Counted per request in plain numbers, flushed into the series above at each scrape
        # (and, with workers, every second): a request costs no lock and no lookup there.
        self._series: dict[tuple[str, str, str], _Series] = {}
        self._tries: dict[tuple[str, str], int] = {}
        self._fallbacks: dict[tuple[str, str, str], int] = {}
        self._tokens: dict[tuple[str, str], list[int]] = {}
        self._table: RoutingTable | None = None
        self._models: frozenset[str] = frozenset()
        self._exposed = exposed = CollectorRegistry(auto_describe=False)
        self._published: set[tuple[str, str]] = set()
        if not self.shared:
            exposed.register(_WithoutCreated([registry, _StateCollector(current, in_flight)]))
        else:
            self.in_flight = Gauge(
                "mini_llm_in_flight_requests",
                _IN_FLIGHT_HELP,
                registry=None,
                multiprocess_mode="livesum",
            )
            self.generation = Gauge(
                "mini_llm_config_generation",
                _GENERATION_HELP,
                registry=None,
                multiprocess_mode="livemax",
            )
            self.resting = Gauge(
                "mini_llm_key_resting",
                _RESTING_HELP,
                ("provider", "key"),
                registry=None,
                multiprocess_mode="livemax",
            )
            self.state_errors = Gauge(  # a worker's own count, summed over the live ones
                "mini_llm_state_errors_total",
                _STATE_ERRORS_HELP,
                registry=None,
                multiprocess_mode="livesum",
            )
            self.circuit = Gauge(
                "mini_llm_circuit_open",
                _CIRCUIT_HELP,
                ("provider",),
                registry=None,
                multiprocess_mode="livemax",
            )
            every_worker = MultiProcessCollector(None)  # type: ignore[no-untyped-call]
            exposed.register(_WithoutCreated([every_worker]))

    # per request --------------------------------------------------------------------------
    def observe(
        self,
        api: str,
        status: int,
        duration: float,
        first_byte: float | None,
        served: Served | None,
        table: RoutingTable,
    ) -> None:
        """Count one request under /v1/ and what served it."""
        if served is None:
            route = provider = "-"
        else:
            route = served.rule
            provider = served.provider or "-"
        key = (api, route, provider)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series(self, key)
        statuses = series.statuses
        statuses[status] = statuses.get(status, 0) + 1
        series.duration.observe(duration)
        if first_byte is not None:  # None: the client left first
            series.first_byte.observe(first_byte)
        if served is None:
            return
        overhead = series.overhead or series.add_overhead(self.overhead.labels(api))
        overhead.observe(max(duration - served.waited, 0.0))
        tries = self._tries
        for tried in served.outcomes:
            tries[tried] = tries.get(tried, 0) + 1
        for moved in served.fallbacks:
            label = (route, *moved)
            self._fallbacks[label] = self._fallbacks.get(label, 0) + 1
        if served.usage is not None and served.provider is not None:
            self._count_tokens(served.provider, served.upstream_model, served.usage, table)

    def _count_tokens(
        self, provider: str, model: str | None, usage: Usage, table: RoutingTable
    ) -> None:
        if table is not self._table:
            self._table, self._models = table, known_models(table)
        label = model if model in self._models else OTHER
        counts = self._tokens.get((provider, label))
        if counts is None:
            counts = self._tokens[(provider, label)] = [0, 0, 0]
        counts[0] += usage.input or 0
        counts[1] += usage.output or 0
        counts[2] += usage.cached_input or 0

    def flush(self) -> None:
        """Move what was counted since the last flush into the prometheus series."""
        for series in self._series.values():
            series.flush()
        tries, self._tries = self._tries, {}
        for label, count in tries.items():
            self.tries.labels(*label).inc(count)
        fallbacks, self._fallbacks = self._fallbacks, {}
        for moved, count in fallbacks.items():
            self.fallbacks.labels(*moved).inc(count)
        for (provider, model), counts in self._tokens.items():
            for index, kind in enumerate(_TOKEN_TYPES):
                child = self.tokens.labels(provider, model, kind)  # all three, zeros too
                if counts[index]:
                    child.inc(counts[index])
                    counts[index] = 0

    def reloaded(self, ok: bool) -> None:
        self.reloads.labels("ok" if ok else "error").inc()

    # per scrape ---------------------------------------------------------------------------
    def exposition(self) -> bytes:
        """The text a scrape gets: every series, every worker's when shared."""
        if self.shared:
            self.publish()
        else:
            self.flush()
        return generate_latest(self._exposed)

    def publish(self) -> None:
        """Write this worker's key rests and generation where every worker's scrape sees them."""
        self.flush()
        self.in_flight.set(self._in_flight())
        snapshot = self._current()
        if snapshot is None:
            return
        self.generation.set(snapshot.generation)
        resting = key_resting(snapshot)
        for label in self._published - resting.keys():
            self.resting.labels(*label).set(0)  # a key no longer configured
        for label, value in resting.items():
            self.resting.labels(*label).set(value)
        self._published = set(resting)
        for provider, value in circuit_open(snapshot).items():
            self.circuit.labels(provider).set(value)
        self.state_errors.set(snapshot.shared.errors)

    async def keep_publishing(self) -> None:
        """Publish every second: another worker may answer the next scrape."""
        while True:
            self.publish()
            await asyncio.sleep(PUBLISH_EVERY_S)


_GENERATION_HELP = "Generation of the routing table in service (1 at start, +1 per reload)."
_RESTING_HELP = "1 while a provider key rests after a 429 or 401/402/403, else 0."
_IN_FLIGHT_HELP = "Requests under /v1/ being served now."
_TOKEN_TYPES = ("input", "output", "cached_input")
_STATE_ERRORS_HELP = "Shared-state (Redis) calls that failed or were slow; memory decided them."
_CIRCUIT_HELP = "1 while a provider's circuit breaker is open or half open, else 0."


class _StateCollector(Collector):
    """Requests in flight, key rests and the table's generation, read at scrape time."""

    def __init__(
        self, current: Callable[[], Snapshot | None], in_flight: Callable[[], int]
    ) -> None:
        self._current = current
        self._in_flight = in_flight

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("mini_llm_in_flight_requests", _IN_FLIGHT_HELP, self._in_flight())
        snapshot = self._current()
        if snapshot is None:
            return
        yield GaugeMetricFamily(
            "mini_llm_config_generation", _GENERATION_HELP, value=snapshot.generation
        )
        resting = GaugeMetricFamily(
            "mini_llm_key_resting", _RESTING_HELP, labels=("provider", "key")
        )
        for (provider, key), value in sorted(key_resting(snapshot).items()):
            resting.add_metric((provider, key), value)
        yield resting
        yield CounterMetricFamily(
            "mini_llm_state_errors", _STATE_ERRORS_HELP, value=snapshot.shared.errors
        )
        circuit = GaugeMetricFamily("mini_llm_circuit_open", _CIRCUIT_HELP, labels=("provider",))
        for provider, value in sorted(circuit_open(snapshot).items()):
            circuit.add_metric((provider,), value)
        yield circuit


class _WithoutCreated(Collector):
    """The families of some collectors, without the `_created` series nobody asked for."""

    def __init__(self, sources: list[Collector]) -> None:
        self._sources = sources

    def collect(self) -> Iterator[Metric]:
        for source in self._sources:
            for family in source.collect():
                family.samples = [s for s in family.samples if not s.name.endswith("_created")]
                yield family
