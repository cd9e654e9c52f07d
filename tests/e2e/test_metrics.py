"""GET /metrics after known traffic: exact series, labels and values (SPEC §10)."""

from __future__ import annotations

import json
import os
import random
import string
import threading
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ..conftest import GatewayFactory
from ..helpers import GatewayProcess, free_port, wait_for
from ..mock_upstream import MockUpstream

Labels = tuple[tuple[str, str], ...]
KEYED_A = "sk-keyed-aaaa-0001"
KEYED_B = "sk-keyed-bbbb-0002"


def table(mock: MockUpstream, reload: bool = False) -> str:
    return f"""version: 1
server: {{reload: {str(reload).lower()}}}
defaults:
  timeouts: {{connect_s: 1, read_s: 10}}
  retry: {{attempts: 1, backoff_s: 0.01, max_backoff_s: 0.01}}
providers:
  mock:
    base_url: {mock.url}
    keys: [sk-mock-key-00000001]
    models: [listed-model]
  anth:
    base_url: {mock.url}
    auth: {{style: header, header: x-api-key}}
    keys: sk-anth-key-00000002
  keyed:
    base_url: {mock.url}
    keys: [{KEYED_A}, {KEYED_B}]
  dead:
    base_url: http://127.0.0.1:{free_port()}/v1
    keys: sk-dead-key-00000003
  quiet:
    base_url: {mock.url}
    keys: sk-quiet-key-0000004
    stream_usage: false
routes:
  aliases:
    m: mock:gpt-x
    chain: [dead:gpt-x, mock:gpt-x]
    flaky: mock:status-503
    k: keyed:gpt-x
    cached: mock:cached-usage
    q: quiet:gpt-x
  prefixes: {{"claude-": anth}}
  default: mock
"""


def scrape(where: str | httpx.Client) -> dict[str, dict[Labels, float]]:
    """Sample name -> labels -> value, from a gateway's URL or over a client's connection."""
    response = httpx.get(where + "/metrics") if isinstance(where, str) else where.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: dict[str, dict[Labels, float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def L(**labels: str) -> Labels:  # reads like the exposition
    return tuple(sorted(labels.items()))


def req(api: str, route: str, provider: str, status: str) -> Labels:
    return L(api=api, route=route, provider=provider, status=status)


@pytest.fixture
def gateway(start_gateway: GatewayFactory, upstream: MockUpstream) -> GatewayProcess:
    return start_gateway(table(upstream))


def chat(http: httpx.Client, model: str, **extra: object) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
    return http.post("/v1/chat/completions", json=body)


def test_series_after_known_traffic(gateway: GatewayProcess, upstream: MockUpstream) -> None:
    upstream.key_status[KEYED_A] = (429, {"retry-after": "60"})
    responses: list[httpx.Response] = []
    with httpx.Client(base_url=gateway.url, timeout=10) as http:
        responses.append(chat(http, "m"))
        streamed = chat(http, "m", stream=True)
        responses.append(streamed)
        asked = upstream.requests[-1].json
        responses.append(chat(http, "q", stream=True))
        not_asked = upstream.requests[-1].json
        own = chat(http, "m", stream=True, stream_options={"include_usage": True})
        responses.append(own)
        for stream in (False, True):
            body = {"model": "claude-3", "max_tokens": 5, "messages": [], "stream": stream}
            responses.append(http.post("/v1/messages", json=body))
        responses.append(chat(http, "chain"))
        responses.append(chat(http, "flaky"))
        responses.append(chat(http, "k"))
        responses.append(chat(http, "cached"))
        responses.append(http.post("/v1/chat/completions", content=b"{not json"))
        responses.append(http.post("/v1/embeddings", json={"model": "listed-model", "input": "x"}))
        responses.append(chat(http, "random-model-name"))
        not_found = http.get("/v1/nope")
        assert http.get("/health").status_code == 200

    assert [r.status_code for r in responses] == [200] * 7 + [503, 200, 200, 400, 200, 200]
    assert not_found.status_code == 404
    for response in responses:  # every routed answer says what the gateway added
        assert float(response.headers["x-mini-llm-overhead-ms"]) >= 0
    assert "x-mini-llm-overhead-ms" not in not_found.headers
    # The gateway asked for usage and took its chunk out: the client sees what it asked for.
    assert asked["stream_options"] == {"include_usage": True}
    assert '"choices": []' not in streamed.text and streamed.text.endswith("data: [DONE]\n\n")
    assert streamed.text.count("data: ") == 5
    assert "stream_options" not in not_asked  # stream_usage: false
    assert '"choices": []' in own.text  # asked by the client itself: kept

    samples = scrape(gateway.url)
    assert samples["mini_llm_requests_total"] == {
        req("chat_completions", "m", "mock", "200"): 3,
        req("chat_completions", "q", "quiet", "200"): 1,
        req("messages", "prefix:claude-", "anth", "200"): 2,
        req("chat_completions", "chain", "mock", "200"): 1,
        req("chat_completions", "flaky", "mock", "503"): 1,
        req("chat_completions", "k", "keyed", "200"): 1,
        req("chat_completions", "cached", "mock", "200"): 1,
        req("chat_completions", "-", "-", "400"): 1,
        req("embeddings", "default", "mock", "200"): 1,
        req("chat_completions", "default", "mock", "200"): 1,
        req("other", "-", "-", "404"): 1,
    }
    durations = samples["mini_llm_request_duration_seconds_count"]
    assert durations[L(api="chat_completions", route="m", provider="mock")] == 3
    assert durations == samples["mini_llm_time_to_first_byte_seconds_count"]
    assert sum(durations.values()) == 14
    # Every request that reached routing; GET /v1/nope did not.
    assert samples["mini_llm_overhead_seconds_count"] == {
        L(api="chat_completions"): 10,
        L(api="messages"): 2,
        L(api="embeddings"): 1,
    }
    assert samples["mini_llm_upstream_tries_total"] == {
        L(provider="mock", outcome="ok"): 7,
        L(provider="mock", outcome="server_error"): 2,
        L(provider="quiet", outcome="ok"): 1,
        L(provider="anth", outcome="ok"): 2,
        L(provider="dead", outcome="connect_error"): 2,
        L(provider="keyed", outcome="rate_limited"): 1,
        L(provider="keyed", outcome="ok"): 1,
    }

    def tokens(provider: str, model: str, i: int, o: int, c: int = 0) -> dict[Labels, float]:
        return {
            L(provider=provider, model=model, type="input"): i,
            L(provider=provider, model=model, type="output"): o,
            L(provider=provider, model=model, type="cached_input"): c,
        }

    assert samples["mini_llm_tokens_total"] == {
        # JSON 3/3, two streams 5/3 (asked for by the gateway, then by the client), chain 3/3
        **tokens("mock", "gpt-x", 16, 12),
        **tokens("mock", "cached-usage", 40, 2, 10),
        **tokens("mock", "listed-model", 3, 3),  # named in the provider's models
        **tokens("mock", "other", 3, 3),  # a name the table does not know
        # Anthropic JSON 3/3; its stream: 3 in message_start, 2 out in message_delta
        **tokens("anth", "other", 6, 5),
        **tokens("keyed", "gpt-x", 3, 3),
    }
    assert samples["mini_llm_fallbacks_total"] == {
        L(route="chain", from_provider="dead", to_provider="mock"): 1
    }
    assert samples["mini_llm_key_resting"] == {
        L(provider="mock", key="sk-…0001"): 0,
        L(provider="anth", key="sk-…0002"): 0,
        L(provider="keyed", key="sk-…0001"): 1,
        L(provider="keyed", key="sk-…0002"): 0,
        L(provider="dead", key="sk-…0003"): 0,
        L(provider="quiet", key="sk-…0004"): 0,
    }
    assert samples["mini_llm_in_flight_requests"] == {(): 0}
    assert samples["mini_llm_config_generation"] == {(): 1}
    assert samples["mini_llm_config_reloads_total"] == {
        L(result="ok"): 0,
        L(result="error"): 0,
    }
    assert not any(name.endswith("_created") for name in samples)


def test_in_flight_reloads_and_generation(
    start_gateway: GatewayFactory, upstream: MockUpstream, tmp_path: Path
) -> None:
    gateway = start_gateway(table(upstream, reload=True))
    done = threading.Event()

    def slow() -> None:
        with httpx.Client(base_url=gateway.url, timeout=10) as http:
            chat(http, "mock:slow-stream", stream=True)
        done.set()

    threading.Thread(target=slow, daemon=True).start()
    wait_for(upstream.first_chunk_sent.is_set)
    assert scrape(gateway.url)["mini_llm_in_flight_requests"] == {(): 1}
    upstream.release.set()
    wait_for(done.is_set)
    assert scrape(gateway.url)["mini_llm_in_flight_requests"] == {(): 0}

    path = tmp_path / "mini-llm.yaml"
    path.write_text("version: 1\nproviders: [not, a, mapping]\n")

    def reloads() -> dict[Labels, float]:
        return scrape(gateway.url)["mini_llm_config_reloads_total"]

    wait_for(lambda: reloads()[L(result="error")] == 1, timeout=5)
    path.write_text(table(upstream, reload=True).replace("m: mock:gpt-x", "m: mock:gpt-y"))
    wait_for(lambda: reloads()[L(result="ok")] == 1, timeout=5)
    samples = scrape(gateway.url)
    assert samples["mini_llm_config_reloads_total"] == {L(result="ok"): 1, L(result="error"): 1}
    assert samples["mini_llm_config_generation"] == {(): 2}


def test_random_model_names_do_not_grow_the_series(
    gateway: GatewayProcess, upstream: MockUpstream
) -> None:
    def count() -> int:
        return sum(len(series) for series in scrape(gateway.url).values())

    def random_name() -> str:
        return "".join(random.choices(string.ascii_lowercase + string.digits, k=24))

    with httpx.Client(base_url=gateway.url, timeout=10) as http:
        for _ in range(3):
            assert chat(http, random_name()).status_code == 200
            assert chat(http, "mock:" + random_name()).status_code == 200
            assert chat(http, "claude-" + random_name()).status_code == 200
        before = count()
        for _ in range(100):
            assert chat(http, random_name()).status_code == 200
            assert chat(http, "mock:" + random_name()).status_code == 200
            assert chat(http, "claude-" + random_name()).status_code == 200
    samples = scrape(gateway.url)
    assert count() == before
    assert samples["mini_llm_requests_total"] == {
        req("chat_completions", "default", "mock", "200"): 103,
        req("chat_completions", "explicit", "mock", "200"): 103,
        req("chat_completions", "prefix:claude-", "anth", "200"): 103,
    }
    assert {labels for labels in samples["mini_llm_tokens_total"]} == {
        L(provider=provider, model="other", type=kind)
        for provider in ("mock", "anth")
        for kind in ("input", "output", "cached_input")
    }


def test_json_access_lines_for_every_request(
    start_gateway: GatewayFactory, upstream: MockUpstream
) -> None:
    server = "server: {reload: false, log_requests: true, log_format: json}"
    text = table(upstream).replace("server: {reload: false}", server)
    gateway = start_gateway(text)
    with httpx.Client(base_url=gateway.url, timeout=10) as http:
        http.post(
            "/v1/chat/completions",
            json={"model": "m", "messages": []},
            headers={"x-request-id": "req-ok"},
        )
        http.post("/v1/chat/completions", content=b"[", headers={"x-request-id": "req-bad"})
        http.get("/nothing/here", headers={"x-request-id": "req-404"})
        http.get("/health", headers={"x-request-id": "req-health"})
    with pytest.raises(httpx.ReadTimeout), httpx.Client(base_url=gateway.url, timeout=0.5) as http:
        chat(http, "mock:hang", stream=True)
    assert gateway.wait_stderr('"cancelled": true')

    lines = {}
    for line in gateway.stderr().splitlines():
        if line.startswith("{"):
            doc = json.loads(line)
            lines[doc["request_id"]] = doc
    ok = lines["req-ok"]
    assert ok.pop("ts").endswith("+00:00")
    assert ok.pop("ttfb_ms") >= 0 and ok.pop("duration_ms") >= 0
    assert ok == {
        "request_id": "req-ok",
        "method": "POST",
        "path": "/v1/chat/completions",
        "status": 200,
        "route": "m",
        "provider": "mock",
        "upstream_model": "gpt-x",
        "key": "sk-…0001",
        "client": None,
        "tries": 1,
        "input_tokens": 3,
        "output_tokens": 3,
        "cancelled": False,
    }
    assert lines["req-bad"]["status"] == 400 and lines["req-bad"]["route"] is None
    assert lines["req-404"]["status"] == 404 and lines["req-404"]["path"] == "/nothing/here"
    assert lines["req-health"]["status"] == 200
    left = next(doc for doc in lines.values() if doc["cancelled"])
    assert left["status"] is None and left["path"] == "/v1/chat/completions"
    assert "sk-mock-key-00000001" not in gateway.stderr()


def test_a_scrape_covers_every_worker(
    start_gateway: GatewayFactory, upstream: MockUpstream
) -> None:
    gateway = start_gateway(table(upstream), "--workers", "2")
    served_by: dict[int, int] = {}
    for _ in range(40):  # fresh connections, so the kernel spreads them over both workers
        with httpx.Client(base_url=gateway.url, timeout=10) as http:
            pid = http.get("/health").json()["pid"]  # the same connection, the same worker
            assert chat(http, "m").status_code == 200
            served_by[pid] = served_by.get(pid, 0) + 1
    assert len(served_by) == 2, served_by

    def published() -> bool:  # each worker publishes its figures every second
        total = scrape(gateway.url)["mini_llm_requests_total"]
        return total == {req("chat_completions", "m", "mock", "200"): 40}

    wait_for(published, timeout=5)
    answered_by = set()
    for _ in range(20):
        with httpx.Client(base_url=gateway.url, timeout=10) as http:
            answered_by.add(http.get("/health").json()["pid"])
            samples = scrape(http)
        assert samples["mini_llm_requests_total"] == {
            req("chat_completions", "m", "mock", "200"): 40
        }
        assert (
            samples["mini_llm_tokens_total"][L(provider="mock", model="gpt-x", type="input")] == 120
        )
        assert samples["mini_llm_upstream_tries_total"] == {L(provider="mock", outcome="ok"): 40}
        assert samples["mini_llm_in_flight_requests"] == {(): 0}
        assert samples["mini_llm_config_generation"] == {(): 1}
        assert samples["mini_llm_key_resting"][L(provider="mock", key="sk-…0001")] == 0
    assert answered_by == set(served_by)

    # A worker that dies: its counts stay, it no longer counts as in flight.
    victim = min(served_by)
    os.kill(victim, 9)
    assert gateway.wait_stderr("exited with -9; restarting")

    def replaced() -> bool:
        with httpx.Client(base_url=gateway.url, timeout=10) as http:
            return http.get("/health").json()["pid"] not in served_by

    wait_for(replaced, timeout=8)
    samples = scrape(gateway.url)
    assert samples["mini_llm_requests_total"] == {req("chat_completions", "m", "mock", "200"): 40}
    assert samples["mini_llm_in_flight_requests"] == {(): 0}


def test_a_parents_multiprocess_folder_is_left_alone(
    start_gateway: GatewayFactory, upstream: MockUpstream, tmp_path: Path
) -> None:
    folder = tmp_path / "parent-metrics"
    folder.mkdir()
    gateway = start_gateway(table(upstream), env={"PROMETHEUS_MULTIPROC_DIR": str(folder)})
    with httpx.Client(base_url=gateway.url, timeout=10) as http:
        assert chat(http, "m").status_code == 200
    samples = scrape(gateway.url)
    assert samples["mini_llm_requests_total"] == {req("chat_completions", "m", "mock", "200"): 1}
    assert list(folder.iterdir()) == []


GATEWAY_KEY = "gw-passy-0123456789abcdef"


def test_gateway_keys_translation_and_the_echo_provider(
    start_gateway: GatewayFactory, upstream: MockUpstream
) -> None:
    gateway = start_gateway(
        f"""version: 1
server:
  reload: false
  log_requests: true
  log_format: json
  auth:
    keys: [{{name: passy, key: "{GATEWAY_KEY}"}}]
providers:
  mock:
    base_url: {upstream.url}
    keys: sk-mock-key-00000001
    format: openai
  anth:
    base_url: {upstream.url}
    auth: {{style: header, header: x-api-key}}
    keys: sk-anth-key-00000002
    format: anthropic
  echo:
    builtin: echo
routes:
  aliases:
    to-openai: mock:gpt-x
    to-anthropic: anth:claude-x
    demo: echo:echo-1
"""
    )
    key = {"x-mini-llm-key": GATEWAY_KEY}
    assert httpx.get(gateway.url + "/metrics").status_code == 401
    refused = httpx.post(gateway.url + "/v1/chat/completions", json={"model": "demo"})
    assert refused.status_code == 401
    with httpx.Client(base_url=gateway.url, headers=key, timeout=10) as http:
        messages = [{"role": "user", "content": "say hello to the gateway"}]
        # An Anthropic client, an OpenAI provider: the translation asks for usage itself.
        body = {"model": "to-openai", "max_tokens": 5, "messages": messages, "stream": True}
        translated = http.post("/v1/messages", json=body, headers={"x-request-id": "req-tr"})
        assert translated.status_code == 200 and "event: message_stop" in translated.text
        assert upstream.requests[-1].json["stream_options"] == {"include_usage": True}
        assert chat(http, "to-anthropic").status_code == 200
        assert chat(http, "demo").status_code == 200
        streamed = http.post(
            "/v1/chat/completions", json={"model": "demo", "messages": messages, "stream": True}
        )
        samples = scrape(http)
    chunks = [
        json.loads(line[6:]) for line in streamed.text.splitlines() if line.startswith("data: {")
    ]
    assert chunks and all(c["choices"] for c in chunks)  # the echo's usage chunk: ours, removed

    assert samples["mini_llm_requests_total"] == {
        req("chat_completions", "-", "-", "401"): 1,  # refused before routing, counted
        req("messages", "to-openai", "mock", "200"): 1,
        req("chat_completions", "to-anthropic", "anth", "200"): 1,
        req("chat_completions", "demo", "echo", "200"): 2,
    }
    tokens = samples["mini_llm_tokens_total"]
    assert tokens[L(provider="mock", model="gpt-x", type="input")] == 5  # the mock's usage chunk
    assert tokens[L(provider="mock", model="gpt-x", type="output")] == 3
    assert tokens[L(provider="anth", model="claude-x", type="input")] == 3
    assert tokens[L(provider="anth", model="claude-x", type="output")] == 3
    echoed = tokens[L(provider="echo", model="echo-1", type="output")]
    assert echoed > 0 and echoed % 2 == 0  # the same answer twice, JSON then streamed

    assert gateway.wait_stderr('"request_id": "req-tr"')
    lines = [json.loads(x) for x in gateway.stderr().splitlines() if x.startswith("{")]
    line = next(x for x in lines if x["request_id"] == "req-tr")
    assert line["client"] == "passy" and line["route"] == "to-openai"
    assert (line["input_tokens"], line["output_tokens"]) == (5, 3)
    assert next(x for x in lines if x["status"] == 401)["client"] is None
    assert GATEWAY_KEY not in gateway.stderr()
