"""Forward one routed request, in layers that each have one job.

    handle          intake: body, model, route; the client's error shape for our own answers
    └ forward       walk the route's targets; the last usable target's outcome decides
      └ tries       tries on one target: a key per try, cooldowns (keys.py), backoff
        └ send      one upstream request; aiohttp failures mapped to 502/504 (errors.py)
    relay           the chosen answer back to the client as it arrives (relay.py)

Where later policies hook in, each at one layer: rate limits and the response cache in
`handle` (before `forward`); balancing and circuit breakers in `forward` (the order and
usability of targets); translation of requests in `send` and of answers in `relay`; token
usage and time to first byte in `relay`; metrics and the access log (observe.py) read the
`Served` that `handle` returns.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from .access import Client, add_cors_headers
from .balance import TargetStats
from .config import Limits, Retry, Target
from .echo import echo_exchange
from .errors import UPSTREAM_FAILURES, ProxyError, error_response, upstream_failure
from .first_content import hold_until_content
from .form import form_model, is_form, replace_value
from .intake import Incoming, check_model, model_of, read_body
from .keys import AFTER_PAUSE, NEXT_KEY, Outcome, outcome_of
from .masking import mask
from .pools import Connections, ProviderRuntime, Snapshot
from .relay import Answer, Relayed, relay
from .routing import ModelNotFound, Route
from .signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, Replays, verify
from .state import Budget, CachedAnswer, cache_key, estimate_tokens
from .translate import needs_translation
from .translation import Translation, translation_for
from .upstream import body_for
from .usage import Usage, wants_stream_usage, with_stream_usage


class Served:
    """What served a request: for the access log, metrics and the response headers."""

    __slots__ = (
        "fallbacks",
        "first_byte_at",
        "key",
        "outcomes",
        "provider",
        "route",
        "rule",
        "tries",
        "upstream_model",
        "usage",
        "waited",
    )

    def __init__(
        self,
        route: str = "-",  # PROVIDER:MODEL of the target that answered, as x-mini-llm-route
        provider: str | None = None,
        key: str | None = None,  # the key of the answer given
        tries: int = 0,
        rule: str = "-",  # Route.label: the alias, prefix:<prefix>, explicit or default
        upstream_model: str | None = None,
        usage: Usage | None = None,
        # Each upstream try in order, and each move to the next target of a chain.
        outcomes: tuple[tuple[str, Outcome], ...] = (),
        fallbacks: tuple[tuple[str, str], ...] = (),
        waited: float = 0.0,  # seconds spent awaiting the upstream: its headers, then its body
        first_byte_at: float | None = None,  # perf_counter() when a stream's first bytes went out
    ) -> None:
        self.route = route
        self.provider = provider
        self.key = key
        self.tries = tries
        self.rule = rule
        self.upstream_model = upstream_model
        self.usage = usage
        self.outcomes = outcomes
        self.fallbacks = fallbacks
        self.waited = waited
        self.first_byte_at = first_byte_at

    def __repr__(self) -> str:
        key = mask(self.key) if self.key else None
        return (
            f"Served(route={self.route!r}, provider={self.provider!r}, key={key!r}, "
            f"tries={self.tries}, rule={self.rule!r}, usage={self.usage!r})"
        )


@dataclass
class Attempt:
    """What the tries on one target came to: an upstream answer to relay, or our own error."""

    served: Served
    answer: Answer | None = None
    error: ProxyError | None = None
    # Whether the next target of a chain may do better (tries exhausted, no key, unreachable).
    retryable: bool = False
    translation: Translation | None = None  # how relay gives a translated answer back

    def discard(self) -> None:
        if self.answer is not None:
            self.answer.close()


class Call:
    """One routed request on the table it started with."""

    __slots__ = (
        "admitted",
        "ask_usage",
        "body",
        "doc",
        "fallbacks",
        "form_span",
        "held",
        "incoming",
        "kept",
        "outcomes",
        "request",
        "route",
        "sent",
        "snapshot",
        "strip_usage",
        "tail",
        "tokens",
        "waited",
    )

    def __init__(
        self,
        incoming: Incoming,
        body: bytes,
        doc: dict[str, Any],
        route: Route,
        form_span: tuple[int, int] | None = None,
    ) -> None:
        self.incoming = incoming
        self.request = request = incoming.request
        self.snapshot = incoming.snapshot
        self.body = body
        self.doc = doc
        self.route = route
        self.form_span = form_span  # where the model is in a multipart body
        self.tail = request.rel_url.raw_path[3:]  # after "/v1", still percent-encoded
        self.sent = 0  # upstream requests made so far
        self.tokens = 0  # the input's estimate, when a token limit counts it
        self.kept: bytes | None = None  # the whole answer relayed, when the cache keeps it
        self.admitted: list[Budget] = []  # rate-limit budgets this request was counted in
        self.held: list[Connections | TargetStats] = []  # released once the answer is relayed
        self.waited = 0.0  # seconds awaiting upstream answers' headers, and retry pauses
        self.outcomes: list[tuple[str, Outcome]] = []
        self.fallbacks: list[tuple[str, str]] = []
        # An OpenAI chat stream that did not ask for usage; when the provider speaks the
        # client's format (no translation), the upstream path is the client's.
        self.ask_usage = wants_stream_usage(self.tail, doc)
        self.strip_usage = False  # the usage chunk of the last target's answer is ours

    def served(self, served: Served, relayed: Relayed | None = None) -> Served:
        """What served the request, completed with what was learnt on the way."""
        served.rule = self.route.label
        served.upstream_model = served.route.partition(":")[2] or None
        served.outcomes = tuple(self.outcomes)
        served.fallbacks = tuple(self.fallbacks)
        served.waited = self.waited
        if relayed is not None:
            served.usage = relayed.usage
            served.waited += relayed.waited
            served.first_byte_at = relayed.first_byte_at
        return served

    def release(self) -> None:
        """Let go of the pools and targets this request held while its answer was relayed."""
        for held in self.held:
            held.release()
        self.held.clear()

    async def forward(self) -> Attempt:
        """Walk the targets in order until one gives an answer no later target could better."""
        last: Attempt | None = None
        previous: str | None = None
        snapshot = self.snapshot
        strategy = self.route.strategy
        targets: Sequence[Target] = self.route.targets
        balancer = snapshot.balancer if strategy != "fallback" else None
        if balancer is not None:
            targets = balancer.order(strategy, targets, self._usable)
        try:
            for target in targets:
                if previous is not None:  # the chain moves on
                    self.fallbacks.append((previous, target.provider))
                previous = target.provider
                runtime = snapshot.runtimes.get(target.provider)
                provider = snapshot.table.providers[target.provider]
                label = str(target)
                if runtime is None or not provider.enabled:
                    if last is None:  # an unusable target never hides what a usable one said
                        last = _disabled(label, provider.disabled_reason)
                    continue
                if not runtime.circuit.allow():  # skipped as a disabled one is
                    if last is None:
                        last = _circuit_open(label, runtime)
                    continue
                if provider.limits:
                    refused = await self._admit(provider.name, provider.limits, label)
                    if refused is not None:  # over its limit: skipped as a disabled one is
                        if last is None:
                            last = refused
                        continue
                probe = runtime.circuit.state == "half_open"  # this request is the probe
                if runtime.connections is not None:  # held until the answer is relayed
                    self.held.append(runtime.connections.hold())
                stats = None
                if balancer is not None:
                    stats = balancer.stats(target)
                    self.held.append(stats.hold())
                try:
                    attempt = await self.tries(runtime, label, target.model, stats)
                finally:
                    if probe:
                        runtime.circuit.release()  # in case it ended without an outcome
                if last is not None:
                    last.discard()
                last = attempt
                if not attempt.retryable:
                    break
        except BaseException:
            if last is not None:
                last.discard()
            raise
        assert last is not None, "a route has at least one target"
        return last

    async def _admit(self, provider: str, limits: Limits, route: str) -> Attempt | None:
        budget = Budget(f"provider:{provider}", limits.rpm, limits.tpm)
        if limits.tpm is not None and not self.tokens:
            self.tokens = estimate_tokens(self.body)
        decision = await self.snapshot.shared.admit([budget], self.tokens)
        if decision.allowed:
            self.admitted.append(budget)
            return None
        message = f"provider `{provider}` is over its {decision.limit} limit; retry later"
        error = ProxyError(429, "rate_limited", message, decision.headers, retryable=True)
        return Attempt(Served(route, provider), None, error, retryable=True)

    async def admit_key(self, name: str, limits: Limits) -> ProxyError | None:
        budget = Budget(f"key:{name}", limits.rpm, limits.tpm)
        if limits.tpm is not None:
            self.tokens = estimate_tokens(self.body)
        decision = await self.snapshot.shared.admit([budget], self.tokens)
        if decision.allowed:
            self.admitted.append(budget)
            return None
        message = f"gateway key `{name}` is over its {decision.limit} limit; retry later"
        return ProxyError(429, "rate_limited", message, decision.headers)

    async def settle(self, served: Served) -> None:
        """Correct the token counts of the budgets this request was admitted to."""
        usage = served.usage
        if not any(b.tpm is not None for b in self.admitted) or usage is None:
            return
        actual = (usage.input or 0) + (usage.output or 0)
        await self.snapshot.shared.settle(self.admitted, self.tokens, actual)

    def _usable(self, target: Target) -> bool:
        runtime = self.snapshot.runtimes.get(target.provider)
        return runtime is not None and runtime.provider.enabled and runtime.circuit.state != "open"

    async def tries(
        self, runtime: ProviderRuntime, route: str, model: str, stats: TargetStats | None = None
    ) -> Attempt:
        """Tries on one target: each with a key that is not resting, pauses after failures."""
        provider = runtime.provider
        needs_key = provider.auth.needs_key
        translation = None
        self.strip_usage = False
        if needs_translation(self.request.path, provider.format):
            try:
                translation = translation_for(self.request.path, self.doc, provider, model)
            except ProxyError as err:
                return Attempt(Served(route, provider.name, None, self.sent), None, err)
            body = translation.body
        elif self.form_span is not None and model != self.route.model:
            body = replace_value(self.body, self.form_span, model)
        else:
            body = body_for(self.body, self.doc, self.route.model, model)
            if self.ask_usage and provider.stream_usage:
                self.strip_usage = True
                body = with_stream_usage(body, self.doc, model)
        waits: Iterator[float] | None = None  # made at the first failure
        tries_left = provider.retry.attempts + 1
        held: Attempt | None = None  # a failed answer, given if no try does better
        try:
            while True:
                key = runtime.keys.acquire() if needs_key else None
                if needs_key and key is None:
                    if held is not None:
                        attempt, held = held, None
                        return attempt
                    error = _all_resting(runtime)
                    return Attempt(Served(route, provider.name, None, self.sent), None, error, True)
                if held is not None:
                    held.discard()
                    held = None
                tries_left -= 1
                self.sent += 1
                served = Served(route, provider.name, key, self.sent)
                asked = time.perf_counter()
                try:
                    answer = await self.send(runtime, body, key, translation)
                except ProxyError as err:
                    outcome = err.outcome or "connect_error"
                    self.outcomes.append((provider.name, outcome))
                    runtime.circuit.record(outcome, provider.health)
                    if not err.retryable or tries_left <= 0:
                        return Attempt(served, None, err, err.retryable, translation)
                    waits = waits or pauses(provider.retry)
                    await self.pause(next(waits))
                    continue
                if key is None:  # no key of ours to rest or rotate: 429 and 401 are answers
                    outcome = outcome_of(answer.status)
                    if outcome in NEXT_KEY:
                        return Attempt(served, answer, None, False, translation)
                else:
                    outcome = runtime.keys.report(
                        key, answer.status, answer.headers, provider.cooldown
                    )
                if outcome == "ok" and answer.content_type == "text/event-stream":
                    # Held until its first content: a stream that fails first is a failed try.
                    anthropic = (translation.tail if translation else self.tail).startswith(
                        "/messages"
                    )
                    held_at = time.perf_counter()
                    verdict, answer = await hold_until_content(
                        answer, anthropic, provider.timeouts.read_s
                    )
                    self.waited += time.perf_counter() - held_at
                    if verdict == "failed":
                        outcome = "server_error"
                if stats is not None and outcome == "ok":
                    stats.observe(time.perf_counter() - asked)
                self.outcomes.append((provider.name, outcome))
                runtime.circuit.record(outcome, provider.health)
                if outcome not in NEXT_KEY and outcome not in AFTER_PAUSE:
                    return Attempt(served, answer, None, False, translation)
                if tries_left <= 0:
                    return Attempt(served, answer, None, True, translation)
                held = Attempt(served, answer, None, True, translation)
                if outcome in AFTER_PAUSE:  # a resting key is retried at once, with the next
                    waits = waits or pauses(provider.retry)
                    await self.pause(next(waits))
        finally:
            if held is not None:  # a failed answer we will not give (e.g. cancelled)
                held.discard()

    async def pause(self, seconds: float) -> None:
        """Wait before a retry; the upstream's failure is what is waited on, not the gateway."""
        await asyncio.sleep(seconds)
        self.waited += seconds

    async def send(
        self,
        runtime: ProviderRuntime,
        body: bytes,
        key: str | None,
        translation: Translation | None = None,
    ) -> Answer:
        """One upstream request; its failures before an answer become 502 or 504."""
        request = self.request
        upstream = runtime.upstream
        tail = self.tail
        headers = upstream.headers(request.headers.items(), key)
        if translation is not None:  # to the other format's endpoint, with its headers
            tail = translation.tail
            headers = translation.headers(headers)
        asked = time.perf_counter()
        try:
            if runtime.connections is None:  # a builtin provider, answered in-process
                return await echo_exchange(request.method, tail, dict(headers), body)
            timeouts = runtime.provider.timeouts
            return await runtime.connections.pool.request(
                request.method,
                upstream.target(tail, request.rel_url.raw_query_string, key),
                headers,
                body,
                timeouts.connect_s,
                timeouts.read_s,
            )
        except UPSTREAM_FAILURES as exc:
            raise upstream_failure(runtime.provider.name, exc) from None
        finally:
            self.waited += time.perf_counter() - asked


def _disabled(route: str, reason: str | None) -> Attempt:
    message = f"{reason}; requests routed to it cannot be served"
    error = ProxyError(503, "provider_disabled", message, retryable=True)
    return Attempt(Served(route), None, error, retryable=True)


def _circuit_open(route: str, runtime: ProviderRuntime) -> Attempt:
    shown = runtime.circuit.shown()
    message = (
        f"provider `{runtime.provider.name}` failed {runtime.provider.health.failures} times in "
        f"a row; it is skipped until {shown['until'] or 'a probe succeeds'}"
    )
    error = ProxyError(503, "provider_unavailable", message, retryable=True)
    return Attempt(Served(route), None, error, retryable=True)


def _all_resting(runtime: ProviderRuntime) -> ProxyError:
    wait = max(1, math.ceil(runtime.keys.seconds_until_available()))
    return ProxyError(
        429,
        "all_keys_resting",
        f"every key of provider `{runtime.provider.name}` is resting after upstream "
        f"failures; retry in {wait} s",
        headers={"Retry-After": str(wait)},
        retryable=True,
    )


def pauses(retry: Retry) -> Iterator[float]:
    """Pauses before retries: from backoff_s, doubling, ±20% jitter, at most max_backoff_s."""
    pause = retry.backoff_s
    while True:
        yield min(pause * random.uniform(0.8, 1.2), retry.max_backoff_s)
        pause *= 2


async def handle(incoming: Incoming) -> web.StreamResponse:
    """Serve one routed POST on the table it arrived under; what served it goes in `served`."""
    request = incoming.request
    request_id = incoming.request_id
    snapshot = incoming.snapshot
    client = incoming.client
    path = request.path
    server = snapshot.config.server
    try:
        body = await read_body(request, server.max_body_bytes, server.client_timeout_s)
        if snapshot.access.hmac_secret:
            _check_signature(request, body, snapshot.access.hmac_secret, request.app)
        form_span = None
        content_type = request.headers.get("Content-Type", "")
        if is_form(content_type):
            model, form_span = form_model(body, content_type)
            check_model(model)
            doc: dict[str, Any] = {}
        else:
            model, doc = model_of(body)
        try:
            route = snapshot.table.resolve(model)
        except ModelNotFound as exc:
            raise ProxyError(404, "model_not_found", str(exc)) from None
        if client is not None and client.via != "x-mini-llm-key":
            _check_passthrough(snapshot, route)
        key_limits = snapshot.access.key_limits.get(client.name) if client is not None else None
    except ProxyError as err:
        refused = error_response(path, request_id, "-", err)
        if err.status == 408:  # the rest of the body is not waited for: answer and hang up
            add_cors_headers(incoming.cors_origin, refused.headers)
            refused.force_close()
            await refused.prepare(request)
            await refused.write_eof()
            if request.transport is not None:
                request.transport.close()
        incoming.served = Served()
        return refused
    call = Call(incoming, body, doc, route, form_span)
    if key_limits is not None and client is not None:
        refused_by_key = await call.admit_key(client.name, key_limits)
        if refused_by_key is not None:
            incoming.served = Served()
            return error_response(path, request_id, "-", refused_by_key)
    cache = snapshot.config.cache
    if not cache.enabled:
        response, served = await _forward_and_relay(call, path, request_id)
    else:
        response, served = await _cached(call, path, request_id, client, cache.max_body_bytes)
    incoming.served = served
    if call.admitted:
        await call.settle(served)
    return response


CACHE_HEADER = "x-mini-llm-cache"
# Headers of a cached answer worth replaying; the rest are per response.
_CACHED_HEADERS = frozenset({"content-type", "content-encoding", "x-mini-llm-route"})


async def _cached(
    call: Call, path: str, request_id: str, client: Client | None, limit: int
) -> tuple[web.StreamResponse, Served]:
    """The response cache: a stored complete 200 answer, or the upstream's, stored."""
    request = call.request
    control = request.headers.get("Cache-Control", "").lower()
    if "no-cache" in control or "no-store" in control:
        return await _forward_and_relay(call, path, request_id, mark="bypass")
    shared = call.snapshot.shared
    targets = [str(t) for t in call.route.targets]
    name = client.name if client is not None else None
    key = cache_key(path, targets, call.doc if call.doc else call.body, name)
    stored = await shared.cache_get(key)
    found = CachedAnswer.from_bytes(stored) if stored is not None else None
    if found is not None:
        replayed = CIMultiDict(found.headers)
        replayed["x-request-id"] = request_id
        replayed[CACHE_HEADER] = "hit"
        hit = web.Response(status=found.status, body=found.body, headers=replayed)
        route = replayed.get("x-mini-llm-route", "-")
        return hit, Served(route, route.partition(":")[0] or None, rule=call.route.label)
    response, served = await _forward_and_relay(call, path, request_id, keep=limit, mark="miss")
    body = call.kept
    if body is not None and response.status == 200:
        headers = tuple((n, v) for n, v in response.headers.items() if n.lower() in _CACHED_HEADERS)
        ttl = call.snapshot.config.cache.ttl_s
        await shared.cache_set(key, CachedAnswer(200, headers, body).to_bytes(), ttl)
    return response, served


async def _forward_and_relay(
    call: Call, path: str, request_id: str, keep: int | None = None, mark: str | None = None
) -> tuple[web.StreamResponse, Served]:
    """Forward, then relay the chosen answer; `mark` is the x-mini-llm-cache verdict."""
    extra = {CACHE_HEADER: mark} if mark is not None else None
    request = call.request
    try:
        attempt = await call.forward()
        served = attempt.served
        if attempt.answer is None:
            assert attempt.error is not None
            refused = error_response(path, request_id, served.route, attempt.error)
            refused.headers.update(extra or {})
            return refused, call.served(served)
        try:
            relayed = await relay(
                request,
                attempt.answer,
                served.provider or "-",
                request_id,
                served.route,
                attempt.translation,
                since=call.incoming.started + call.waited,
                strip_usage=call.strip_usage,
                keep=keep if attempt.translation is None else None,
                extra=extra,
                cors_origin=call.incoming.cors_origin,
            )
        except ProxyError as err:
            failed = error_response(path, request_id, served.route, err)
            failed.headers.update(extra or {})
            return failed, call.served(served)
        call.kept = relayed.body
        return relayed.response, call.served(served, relayed)
    finally:
        call.release()


REPLAYS = web.AppKey("replays", Replays)


def _check_signature(request: web.Request, body: bytes, secret: str, app: web.Application) -> None:
    headers = request.headers
    problem = verify(
        secret,
        request.method,
        request.rel_url.raw_path,
        body,
        headers.get(TIMESTAMP_HEADER),
        headers.get(SIGNATURE_HEADER),
        app[REPLAYS],
    )
    if problem is not None:
        raise ProxyError(401, problem, _SIGNATURE_MESSAGES[problem])


_SIGNATURE_MESSAGES = {
    "signature_required": "requests must be signed: send x-timestamp and x-signature",
    "signature_expired": "x-timestamp is more than 300 s away from the gateway's clock",
    "invalid_signature": "x-signature does not match the request",
    "replayed_request": "this signature was already used: sign every request anew",
}


def _check_passthrough(snapshot: Snapshot, route: Route) -> None:
    providers = snapshot.table.providers
    if any(providers[t.provider].auth.style == "passthrough" for t in route.targets):
        raise ProxyError(
            401,
            "authentication_error",
            "this model passes your own Authorization / x-api-key to the provider: "
            "send the gateway key in x-mini-llm-key",
        )
