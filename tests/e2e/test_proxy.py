"""End-to-end: the real gateway process against a real mock upstream, driven by real clients."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from ..helpers import GatewayProcess, free_port, wait_for
from ..mock_upstream import MockUpstream

KEY_ONE = "sk-mock-key-one-1111"
KEY_TWO = "sk-mock-key-two-2222"
ANTHROPIC_KEY = "sk-ant-key-aaaaaaaa9999"


TABLE = """
version: 1
server: {{max_body_bytes: 4096, reload: false}}
defaults:
  timeouts: {{connect_s: 2, read_s: 5}}
  retry: {{attempts: 0, backoff_s: 0.01}}
providers:
  mock:
    base_url: {mock}
    keys: [{key_one}, {key_two}]
    headers: {{x-extra: "yes", x-drop-me: null}}
    models: [upstream-model, other-model]
  anth:
    base_url: {mock}
    auth: {{style: header, header: x-api-key}}
    keys: {anthropic_key}
    headers: {{anthropic-version: "2023-06-01"}}
  byok:
    base_url: {mock}
    auth: passthrough
  gem:
    base_url: {mock}
    auth: {{style: query, param: key}}
    keys: [gem-key-1234567890]
    query: {{api-version: "2024-01"}}
  slow:
    base_url: {mock}
    keys: [sk-slow-key-00000000]
    timeouts: {{read_s: 0.5}}
  dead:
    base_url: http://127.0.0.1:{dead}/v1
    keys: [sk-dead-key-0000000]
  off:
    base_url: https://example.invalid/v1
    keys: ${{OFF_PROVIDER_KEY:-}}
routes:
  aliases:
    fast: mock:upstream-model
    claude: anth:claude-upstream
  prefixes: {{"claude-": anth}}
"""


def table_text(mock: MockUpstream) -> str:
    return TABLE.format(
        mock=mock.url,
        key_one=KEY_ONE,
        key_two=KEY_TWO,
        anthropic_key=ANTHROPIC_KEY,
        dead=free_port(),
    )


@pytest.fixture(scope="module")
def gateway(
    mock_server: MockUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    path = tmp_path_factory.mktemp("proxy") / "mini-llm.yaml"
    path.write_text(table_text(mock_server))
    process = GatewayProcess(path, "--log-requests")
    process.wait_listening()
    yield process
    assert process.stop() == 0


@pytest.fixture
def client(gateway: GatewayProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=10) as http:
        yield http


def oai(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="client-own-key", max_retries=0)


def claude(gateway: GatewayProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key="client-own-key", max_retries=0)


# The official SDKs -----------------------------------------------------------------------------


def test_openai_sdk_through_an_alias(gateway: GatewayProcess, upstream: MockUpstream) -> None:
    with oai(gateway) as sdk:
        raw = sdk.chat.completions.with_raw_response.create(
            model="fast", messages=[{"role": "user", "content": "hi"}]
        )
    completion = raw.parse()
    assert completion.choices[0].message.content == "hello from upstream-model"
    assert raw.headers["x-mini-llm-route"] == "mock:upstream-model"
    assert raw.headers["x-request-id"]
    seen = upstream.requests[-1]
    assert seen.path == "/v1/chat/completions"
    assert seen.json["model"] == "upstream-model"
    assert seen.json["messages"] == [{"role": "user", "content": "hi"}]
    assert seen.key in (KEY_ONE, KEY_TWO)
    assert seen.headers["x-extra"] == "yes"


def test_openai_sdk_stream(gateway: GatewayProcess, upstream: MockUpstream) -> None:
    with oai(gateway) as sdk:
        stream = sdk.chat.completions.create(
            model="fast", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
    assert text == "one two three "
    assert upstream.requests[-1].json["stream"] is True


def test_anthropic_sdk_messages_and_stream(gateway: GatewayProcess, upstream: MockUpstream) -> None:
    with claude(gateway) as sdk:
        message = sdk.messages.create(
            model="claude", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
        assert message.content[0].text == "hello from claude-upstream"  # type: ignore[union-attr]
        seen = upstream.requests[-1]
        assert seen.path == "/v1/messages"
        assert seen.headers["x-api-key"] == ANTHROPIC_KEY  # the client's own key was replaced
        assert seen.headers["anthropic-version"] == "2023-06-01"
        assert "Authorization" not in seen.headers
        with sdk.messages.stream(
            model="claude-3-haiku", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            text = "".join(stream.text_stream)
    assert text == "one two"
    assert upstream.requests[-1].json["model"] == "claude-3-haiku"  # prefix: name unchanged


# Forwarding ------------------------------------------------------------------------------------


def test_unchanged_model_forwards_the_clients_bytes(
    client: httpx.Client, upstream: MockUpstream
) -> None:
    body = b'{ "messages" : [],   "model":"claude-x" ,"z":1.50, "u":"\\u00e9"}'
    response = client.post(
        "/v1/messages", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 200
    assert upstream.requests[-1].body == body


def test_rewritten_model_keeps_every_other_field(
    client: httpx.Client, upstream: MockUpstream
) -> None:
    doc = {
        "model": "fast",
        "messages": [{"role": "user", "content": "é ✓"}],
        "n": 2,
        "nested": {"a": [1, 2.5, None, True]},
    }
    response = client.post("/v1/chat/completions", json=doc)
    assert response.status_code == 200
    assert upstream.requests[-1].json == doc | {"model": "upstream-model"}


def test_rewritten_model_keeps_the_clients_formatting(
    client: httpx.Client, upstream: MockUpstream
) -> None:
    body = b'{\n  "messages": [{"role": "user", "content": "caf\xc3\xa9"}],\n  "model" :  "fast"\n}'
    response = client.post("/v1/chat/completions", content=body)
    assert response.status_code == 200
    assert upstream.requests[-1].body == body.replace(b'"fast"', b'"upstream-model"')


def test_answers_cut_short_are_never_passed_off_as_complete(
    client: httpx.Client, upstream: MockUpstream
) -> None:
    small = client.post("/v1/chat/completions", json={"model": "mock:truncated-json"})
    assert small.status_code == 502
    assert small.json()["error"]["code"] == "upstream_error"
    with pytest.raises(httpx.RemoteProtocolError):
        client.post("/v1/chat/completions", json={"model": "mock:truncated-big-json"})


def test_explicit_provider_model_splits_at_the_first_colon(
    client: httpx.Client, upstream: MockUpstream
) -> None:
    response = client.post("/v1/chat/completions", json={"model": "mock:llama3:8b"})
    assert response.status_code == 200
    assert response.headers["x-mini-llm-route"] == "mock:llama3:8b"
    assert upstream.requests[-1].json["model"] == "llama3:8b"


def test_headers_going_upstream(client: httpx.Client, upstream: MockUpstream) -> None:
    response = client.post(
        "/v1/chat/completions?trace=1",
        json={"model": "fast"},
        headers={
            "Authorization": "Bearer client-own",
            "x-api-key": "client-x",
            "api-key": "c",
            "x-drop-me": "client",
            "x-extra": "client",
            "x-custom": "kept",
            "Connection": "keep-alive, x-hop",
            "x-hop": "dropped",
            "Accept-Encoding": "gzip",
        },
    )
    assert response.status_code == 200
    seen = upstream.requests[-1]
    lowered = {k.lower(): v for k, v in seen.headers.items()}
    assert lowered["authorization"] in (f"Bearer {KEY_ONE}", f"Bearer {KEY_TWO}")
    assert "x-api-key" not in lowered and "api-key" not in lowered
    assert "x-drop-me" not in lowered  # null in the table removes it
    assert lowered["x-extra"] == "yes"  # the table's value replaces the client's
    assert lowered["x-custom"] == "kept"
    assert "x-hop" not in lowered  # named by Connection: hop-by-hop
    assert lowered["accept-encoding"] == "gzip"
    assert seen.query == "trace=1"


def test_no_header_is_added_that_the_client_did_not_send(
    gateway: GatewayProcess, upstream: MockUpstream
) -> None:
    body = b'{"model": "fast"}'
    host = gateway.url.removeprefix("http://")
    raw = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: " + host.encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: 17\r\n\r\n" + body
    )
    with socket.create_connection(("127.0.0.1", int(host.rpartition(":")[2])), timeout=10) as conn:
        conn.sendall(raw)
        assert conn.recv(4096).startswith(b"HTTP/1.1 200")
    names = {name.lower() for name in upstream.requests[-1].headers}
    # No User-Agent, Accept or Accept-Encoding of the gateway's HTTP client: only what the
    # client sent, the provider's key and headers (x-extra), and the new request's framing.
    assert names == {"host", "content-type", "content-length", "authorization", "x-extra"}


def test_passthrough_keeps_the_clients_credentials(
    client: httpx.Client, upstream: MockUpstream
) -> None:
    response = client.post(
        "/v1/chat/completions",
        json={"model": "byok:m"},
        headers={"Authorization": "Bearer users-own-key"},
    )
    assert response.status_code == 200
    assert upstream.requests[-1].key == "users-own-key"


def test_query_auth_and_provider_query(client: httpx.Client, upstream: MockUpstream) -> None:
    response = client.post("/v1/chat/completions?key=client-guess&x=1", json={"model": "gem:g"})
    assert response.status_code == 200
    seen = upstream.requests[-1]
    assert seen.key == "gem-key-1234567890"
    assert sorted(seen.query.split("&")) == ["api-version=2024-01", "key=gem-key-1234567890", "x=1"]


def test_compressed_answers_pass_through_untouched(
    client: httpx.Client, upstream: MockUpstream
) -> None:
    with client.stream("POST", "/v1/chat/completions", json={"model": "mock:gzip"}) as response:
        raw = b"".join(response.iter_raw())
    assert response.headers["content-encoding"] == "gzip"
    assert json.loads(gzip.decompress(raw)) == {"model": "gzip", "compressed": True}


def test_upstream_errors_pass_through(client: httpx.Client, upstream: MockUpstream) -> None:
    for status in (400, 404, 418, 422, 500, 503):
        response = client.post("/v1/chat/completions", json={"model": f"mock:status-{status}"})
        assert response.status_code == status
        assert response.json()["error"]["code"] == f"mock_{status}"
        assert response.headers["x-mini-llm-route"] == f"mock:status-{status}"
    assert len(upstream.requests) == 6  # retry.attempts is 0 in this table


def test_keys_rotate_round_robin(client: httpx.Client, upstream: MockUpstream) -> None:
    for _ in range(4):
        assert client.post("/v1/chat/completions", json={"model": "fast"}).status_code == 200
    keys = [seen.key for seen in upstream.requests]
    assert keys[0] != keys[1] and keys[0] == keys[2] and keys[1] == keys[3]
    assert set(keys) == {KEY_ONE, KEY_TWO}


def test_request_id_is_kept_or_made(client: httpx.Client, upstream: MockUpstream) -> None:
    given = client.post(
        "/v1/chat/completions", json={"model": "fast"}, headers={"x-request-id": "req-from-client"}
    )
    assert given.headers["x-request-id"] == "req-from-client"
    assert given.headers["x-upstream-request-id"] == "upstream-req-1"
    made = client.post("/v1/chat/completions", json={"model": "fast"})
    assert len(made.headers["x-request-id"]) == 32


# Errors in the client's shape ------------------------------------------------------------------


def openai_error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert "x-request-id" in response.headers and "x-mini-llm-route" in response.headers
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "code"} and error["code"] == code
    return str(error["message"])


def anthropic_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    doc = response.json()
    assert doc["type"] == "error" and set(doc["error"]) == {"type", "message"}
    return str(doc["error"]["message"])


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "invalid_json"),
        (b"[1, 2]", "invalid_json"),
        (b"{}", "missing_model"),
        (b'{"model": 7}', "invalid_model"),
        (b'{"model": ""}', "invalid_model"),
        (json.dumps({"model": "m" * 257}).encode(), "invalid_model"),
    ],
)
def test_bad_requests_get_400(
    client: httpx.Client, upstream: MockUpstream, body: bytes, code: str
) -> None:
    openai_error(client.post("/v1/chat/completions", content=body), 400, code)
    anthropic_error(client.post("/v1/messages", content=body), 400)
    assert upstream.requests == []


def test_bodies_over_the_limit_get_413(client: httpx.Client, upstream: MockUpstream) -> None:
    big = json.dumps({"model": "fast", "pad": "x" * 5000}).encode()
    openai_error(client.post("/v1/chat/completions", content=big), 413, "request_too_large")

    def chunked() -> Iterator[bytes]:
        yield big[:1000]
        yield big[1000:]

    anthropic_error(client.post("/v1/messages", content=chunked()), 413)
    assert upstream.requests == []


def test_unrouted_model_gets_404_with_nearest_aliases(client: httpx.Client) -> None:
    message = openai_error(
        client.post("/v1/chat/completions", json={"model": "fats"}), 404, "model_not_found"
    )
    assert "'fast'" in message
    anthropic_error(client.post("/v1/messages", json={"model": "nothing-like-it"}), 404)


def test_disabled_provider_gets_503_naming_the_variable(client: httpx.Client) -> None:
    message = openai_error(
        client.post("/v1/chat/completions", json={"model": "off:m"}), 503, "provider_disabled"
    )
    assert "OFF_PROVIDER_KEY" in message


def test_unreachable_upstream_gets_502(client: httpx.Client) -> None:
    message = openai_error(
        client.post("/v1/chat/completions", json={"model": "dead:m"}), 502, "upstream_unreachable"
    )
    assert "sk-dead" not in message and "Errno" not in message and "Traceback" not in message
    anthropic_error(client.post("/v1/messages", json={"model": "dead:m"}), 502)


def test_silent_upstream_gets_504(client: httpx.Client, upstream: MockUpstream) -> None:
    openai_error(
        client.post("/v1/chat/completions", json={"model": "slow:hang"}), 504, "upstream_timeout"
    )
    assert upstream.disconnected.wait(2)


def test_unknown_paths_get_404(client: httpx.Client) -> None:
    openai_error(client.get("/v1/chat/completions"), 404, "not_found")
    openai_error(client.post("/v2/x", json={"model": "fast"}), 404, "not_found")
    anthropic_error(client.get("/v1/messages/batches"), 404)


def test_any_post_under_v1_with_a_model_is_routed(
    client: httpx.Client, upstream: MockUpstream
) -> None:
    response = client.post("/v1/audio/speech", json={"model": "fast", "input": "x"})
    assert response.status_code == 200
    assert upstream.requests[-1].path == "/v1/audio/speech"


# Health and models -----------------------------------------------------------------------------


def test_health_and_models(client: httpx.Client, gateway: GatewayProcess) -> None:
    answer = client.get("/health", headers={"x-request-id": "health-check-1"})
    assert answer.headers["x-request-id"] == "health-check-1"
    health = answer.json()
    assert health["status"] == "ok"
    assert health["config"]["generation"] == 1 and health["config"]["last_error"] is None
    assert health["providers"]["mock"] == {
        "enabled": True,
        "keys": 2,
        "key_states": [
            {"id": "sk-…1111", "state": "ok", "until": None, "failures": 0},
            {"id": "sk-…2222", "state": "ok", "until": None, "failures": 0},
        ],
        "circuit": "closed",
        "until": None,
    }
    assert health["providers"]["off"]["enabled"] is False
    assert KEY_ONE not in json.dumps(health)
    models = client.get("/v1/models").json()
    assert models["object"] == "list"
    ids = [m["id"] for m in models["data"]]
    assert ids == ["fast", "claude", "upstream-model", "other-model"]
    assert all(m["object"] == "model" and "created" in m and m["owned_by"] for m in models["data"])


def test_access_log_masks_keys(client: httpx.Client, gateway: GatewayProcess) -> None:
    client.post("/v1/chat/completions", json={"model": "fast"}, headers={"x-request-id": "logme"})
    assert gateway.wait_stderr("id=logme")
    line = next(text for text in gateway.stderr_lines if "id=logme" in text)
    assert "POST /v1/chat/completions 200" in line and "route=mock:upstream-model" in line
    assert "key=sk-…1111" in line or "key=sk-…2222" in line
    assert KEY_ONE not in gateway.stderr() and KEY_TWO not in gateway.stderr()


# Streaming and disconnects ---------------------------------------------------------------------


def test_stream_chunks_arrive_before_the_upstream_finishes(
    client: httpx.Client, upstream: MockUpstream
) -> None:
    with client.stream(
        "POST", "/v1/chat/completions", json={"model": "mock:slow-stream", "stream": True}
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        chunks = response.iter_raw()
        first = next(chunks)
        # The upstream is still holding back its last chunks until we release it.
        assert first.startswith(b"data: ") and not upstream.finished.is_set()
        upstream.release.set()
        rest = b"".join(chunks)
    assert rest.endswith(b"data: [DONE]\n\n")
    assert upstream.finished.wait(2)


def test_client_leaving_before_the_answer_closes_the_upstream(
    gateway: GatewayProcess, upstream: MockUpstream
) -> None:
    with socket.create_connection(("127.0.0.1", int(gateway.url.rsplit(":", 1)[1]))) as sock:
        body = json.dumps({"model": "mock:hang"}).encode()
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
            b"application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        deadline = time.monotonic() + 5
        while not upstream.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        assert upstream.requests, "the request never reached the upstream"
    started = time.monotonic()
    assert upstream.disconnected.wait(2)
    assert time.monotonic() - started < 1.0


def test_a_client_that_leaves_gets_an_access_line(
    gateway: GatewayProcess, upstream: MockUpstream
) -> None:
    with socket.create_connection(("127.0.0.1", int(gateway.url.rsplit(":", 1)[1]))) as sock:
        body = json.dumps({"model": "mock:hang"}).encode()
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nx-request-id: left-early\r\n"
            b"Content-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        wait_for(lambda: upstream.requests)
    assert gateway.wait_stderr("id=left-early cancelled")
    line = next(x for x in gateway.stderr().splitlines() if "id=left-early" in x)
    assert "POST /v1/chat/completions - " in line


def test_client_leaving_mid_stream_closes_the_upstream(
    client: httpx.Client, upstream: MockUpstream
) -> None:
    with client.stream(
        "POST", "/v1/chat/completions", json={"model": "mock:hang-stream", "stream": True}
    ) as response:
        assert next(response.iter_raw()).startswith(b"data: ")
    started = time.monotonic()
    assert upstream.disconnected.wait(2)
    assert time.monotonic() - started < 1.0


def test_many_concurrent_mixed_requests(gateway: GatewayProcess, upstream: MockUpstream) -> None:
    async def run() -> list[tuple[int, str]]:
        limits = httpx.Limits(max_connections=400)
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30, limits=limits) as http:

            async def one(i: int) -> tuple[int, str]:
                if i % 4 == 0:
                    async with http.stream(
                        "POST", "/v1/chat/completions", json={"model": "fast", "stream": True}
                    ) as r:
                        return r.status_code, (await r.aread()).decode()[-14:]
                if i % 4 == 1:
                    r = await http.post("/v1/messages", json={"model": "claude", "i": i})
                    return r.status_code, r.json()["content"][0]["text"]
                r = await http.post("/v1/chat/completions", json={"model": "fast", "i": i})
                return r.status_code, "ok" if r.json()["echo"]["i"] == i else "mixed"

            return await asyncio.gather(*(one(i) for i in range(400)))

    results = asyncio.run(run())
    assert all(status == 200 for status, _ in results)
    assert {text for _, text in results} == {"data: [DONE]\n\n", "hello from claude-upstream", "ok"}
    assert len(upstream.requests) == 400


# Process behaviour -----------------------------------------------------------------------------


def test_sigterm_drains_a_live_stream(
    start_gateway: object, upstream: MockUpstream, tmp_path: Path
) -> None:
    gateway = start_gateway(table_text(upstream))  # type: ignore[operator]
    with (
        httpx.Client(base_url=gateway.url, timeout=10) as http,
        http.stream(
            "POST", "/v1/chat/completions", json={"model": "mock:slow-stream", "stream": True}
        ) as response,
    ):
        chunks = response.iter_raw()
        next(chunks)
        gateway.signal()
        assert gateway.wait_stderr("draining")
        # New connections are refused while the stream drains.
        with pytest.raises(httpx.ConnectError):
            httpx.get(gateway.url + "/health", timeout=2)
        upstream.release.set()
        rest = b"".join(chunks)
    assert rest.endswith(b"data: [DONE]\n\n")
    assert gateway.process.wait(10) == 0


def test_busy_port_moves_to_the_next_one(start_gateway: object, upstream: MockUpstream) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        gateway = start_gateway(table_text(upstream), "--port", str(port))  # type: ignore[operator]
        assert gateway.url == f"http://127.0.0.1:{port + 1}" or gateway.url.endswith(f":{port + 2}")
        assert gateway.stdout_lines == [f"mini-llm listening on {gateway.url}\n"]


def test_invalid_table_is_refused_before_binding(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("version: 1\nproviders:\n  a:\n    base_ur: http://x\n")
    process = GatewayProcess(path)
    with pytest.raises(RuntimeError):
        process.wait_listening()
    assert process.stop() == 1
    assert f"{path}:4:5: unknown key `base_ur`; did you mean `base_url`?" in process.stderr()
    assert process.stdout_lines == []
    assert "Traceback" not in process.stderr()
