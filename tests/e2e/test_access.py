"""Who may use the gateway: keys, Host and Origin checks, CORS, signing, slow and many clients."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import threading
import time

import anthropic
import httpx
import openai
import pytest

from mini_llm.contract import serve_argv
from mini_llm.signing import sign_request

from ..conftest import GatewayFactory
from ..helpers import GatewayProcess, clean_env, wait_for, write
from ..mock_upstream import MockUpstream

GATEWAY_KEY = "gw-passy-0123456789abcdef"
OTHER_KEY = "gw-other-fedcba9876543210"
UPSTREAM_KEY = "sk-upstream-000000000001"
SECRET = "hmac-secret-for-tests"


def table(mock: MockUpstream, server: str = "") -> str:
    return f"""version: 1
server:
  reload: false
{server}
providers:
  mock:
    base_url: {mock.url}
    keys: {UPSTREAM_KEY}
  byok:
    base_url: {mock.url}
    auth: passthrough
routes:
  aliases:
    fast: mock:up-model
    mine: byok:byok-model
"""


KEYS = f"""  auth:
    keys:
      - {{name: passy, key: "{GATEWAY_KEY}"}}
      - {OTHER_KEY}
  allowed_origins: ["http://app.example:8080"]"""


def port_of(gateway: GatewayProcess) -> int:
    return int(gateway.url.rsplit(":", 1)[1])


def chat(
    gateway: GatewayProcess, headers: dict[str, str] | None = None, **body: object
) -> httpx.Response:
    return httpx.post(
        gateway.url + "/v1/chat/completions",
        json={"model": "fast", "messages": [], **body},
        headers=headers or {},
        timeout=10,
    )


@pytest.fixture
def open_gateway(start_gateway: GatewayFactory, upstream: MockUpstream) -> GatewayProcess:
    return start_gateway(table(upstream, '  allowed_hosts: ["gateway.internal"]'))


@pytest.fixture
def keyed(start_gateway: GatewayFactory, upstream: MockUpstream) -> GatewayProcess:
    return start_gateway(table(upstream, KEYS), "--log-requests")


# Browsers: Origin and Host ---------------------------------------------------------------------


def test_a_cross_site_simple_request_is_refused_and_nothing_goes_upstream(
    open_gateway: GatewayProcess, upstream: MockUpstream
) -> None:
    response = httpx.post(
        open_gateway.url + "/v1/chat/completions",
        content=json.dumps({"model": "fast", "messages": []}),
        headers={"Content-Type": "text/plain", "Origin": "http://evil.example"},
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "origin_not_allowed"
    assert "access-control-allow-origin" not in response.headers
    assert upstream.requests == []


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:{port}", "10.9.8.7"])
def test_a_foreign_host_is_refused(
    open_gateway: GatewayProcess, upstream: MockUpstream, host: str
) -> None:
    shown = host.format(port=port_of(open_gateway))
    response = chat(open_gateway, {"Host": shown})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "host_not_allowed"
    assert httpx.get(open_gateway.url + "/health", headers={"Host": shown}).status_code == 403
    assert upstream.requests == []


@pytest.mark.parametrize(
    "host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST", "127.1.2.3", "gateway.internal"]
)
def test_loopback_and_allowed_hosts_are_served(open_gateway: GatewayProcess, host: str) -> None:
    assert chat(open_gateway, {"Host": host.format(port=port_of(open_gateway))}).status_code == 200


def test_the_gateways_own_origin_is_allowed(open_gateway: GatewayProcess) -> None:
    own = f"http://127.0.0.1:{port_of(open_gateway)}"
    response = chat(open_gateway, {"Origin": own})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == own


def test_an_allowed_origin_gets_cors_on_streams(
    open_gateway: GatewayProcess, upstream: MockUpstream
) -> None:
    own = f"http://127.0.0.1:{port_of(open_gateway)}"
    response = chat(open_gateway, {"Origin": own}, stream=True)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["access-control-allow-origin"] == own
    assert "x-mini-llm-route" in response.headers["access-control-expose-headers"]
    assert response.headers.get_list("vary").count("Origin") == 1


def test_a_cookie_one_answer_sets_is_never_sent_upstream_for_another(
    start_gateway: GatewayFactory, upstream: MockUpstream
) -> None:
    # By a host name: aiohttp's cookie jar ignores cookies from IP addresses.
    gateway = start_gateway(table(upstream).replace("127.0.0.1", "localhost"))
    first = chat(gateway, model="mock:set-cookie")
    assert first.headers["set-cookie"].startswith("session=client-a")  # the client gets it
    assert chat(gateway).status_code == 200
    assert [seen.headers.get("Cookie") for seen in upstream.requests] == [None, None]


def test_an_allowed_origin_gets_cors_on_answers_and_errors(
    keyed: GatewayProcess, upstream: MockUpstream
) -> None:
    origin = "http://app.example:8080"
    ok = chat(keyed, {"Origin": origin, "x-mini-llm-key": GATEWAY_KEY})
    refused = chat(keyed, {"Origin": origin})
    assert (ok.status_code, refused.status_code) == (200, 401)
    for response in (ok, refused):
        assert response.headers["access-control-allow-origin"] == origin
        assert response.headers.get_list("vary").count("Origin") == 1
        exposed = response.headers["access-control-expose-headers"]
        assert "x-request-id" in exposed and "x-mini-llm-route" in exposed


def test_preflights(keyed: GatewayProcess, upstream: MockUpstream) -> None:
    asked = "authorization, content-type, x-stainless-os, x-stainless-retry-count"
    response = httpx.options(
        keyed.url + "/v1/chat/completions",
        headers={
            "Origin": "http://app.example:8080",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": asked,
        },
    )
    assert response.status_code == 204  # no key needed: browsers send none
    assert response.headers["access-control-allow-origin"] == "http://app.example:8080"
    assert response.headers["access-control-allow-methods"] == "GET, POST, OPTIONS"
    allowed = {h.strip() for h in response.headers["access-control-allow-headers"].split(",")}
    assert allowed >= {
        "authorization",
        "content-type",
        "x-api-key",
        "anthropic-version",
        "anthropic-beta",
        "x-mini-llm-key",
        "x-request-id",
        "x-stainless-os",
        "x-stainless-retry-count",
    }
    foreign = httpx.options(
        keyed.url + "/v1/chat/completions",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert foreign.status_code == 403
    assert "access-control-allow-origin" not in foreign.headers
    assert upstream.requests == []


# Gateway keys ------------------------------------------------------------------------------------


def test_without_a_key_nothing_is_served_and_nothing_goes_upstream(
    keyed: GatewayProcess, upstream: MockUpstream
) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong-key"}, {"x-mini-llm-key": "nope"}):
        response = chat(keyed, headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "authentication_error"
        assert response.headers["x-request-id"]
    messages = httpx.post(keyed.url + "/v1/messages", json={"model": "fast"})
    assert messages.status_code == 401
    assert messages.json()["error"]["type"] == "authentication_error"  # Anthropic's shape
    assert httpx.get(keyed.url + "/v1/models").status_code == 401
    assert httpx.get(keyed.url + "/metrics").status_code == 401
    assert httpx.get(keyed.url + "/no/such/path").status_code == 401
    assert upstream.requests == []


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {GATEWAY_KEY}"},
        {"x-api-key": GATEWAY_KEY},
        {"x-mini-llm-key": GATEWAY_KEY},
    ],
)
def test_each_header_form_of_the_key_works_and_is_never_forwarded(
    keyed: GatewayProcess, upstream: MockUpstream, headers: dict[str, str]
) -> None:
    response = chat(keyed, headers)
    assert response.status_code == 200, response.text
    seen = upstream.requests[-1]
    assert seen.key == UPSTREAM_KEY
    assert GATEWAY_KEY not in json.dumps(seen.headers)


def test_the_sdks_authenticate_with_api_key(keyed: GatewayProcess, upstream: MockUpstream) -> None:
    oai = openai.OpenAI(base_url=keyed.url + "/v1", api_key=GATEWAY_KEY, max_retries=0)
    assert oai.chat.completions.create(model="fast", messages=[]).model
    claude = anthropic.Anthropic(base_url=keyed.url, api_key=OTHER_KEY, max_retries=0)
    assert claude.messages.create(model="fast", max_tokens=5, messages=[]).id
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=keyed.url + "/v1", api_key="wrong", max_retries=0).models.list()
    assert all(GATEWAY_KEY not in json.dumps(r.headers) for r in upstream.requests)


def test_the_access_log_names_the_client_never_its_key(
    keyed: GatewayProcess, upstream: MockUpstream
) -> None:
    chat(keyed, {"x-api-key": GATEWAY_KEY, "x-request-id": "named-client"})
    assert keyed.wait_stderr("id=named-client")
    line = next(x for x in keyed.stderr().splitlines() if "id=named-client" in x)
    assert "client=passy" in line
    assert GATEWAY_KEY not in keyed.stderr()


def test_health_without_a_key_is_only_liveness(keyed: GatewayProcess) -> None:
    assert httpx.get(keyed.url + "/health").json() == {"status": "ok"}
    full = httpx.get(keyed.url + "/health", headers={"x-mini-llm-key": GATEWAY_KEY}).json()
    assert full["providers"]["mock"]["enabled"] is True
    assert GATEWAY_KEY not in json.dumps(full)


def test_passthrough_takes_the_gateway_key_only_in_its_own_header(
    keyed: GatewayProcess, upstream: MockUpstream
) -> None:
    body = {"model": "mine", "messages": []}
    refused = httpx.post(
        keyed.url + "/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {GATEWAY_KEY}"},
    )
    assert refused.status_code == 401
    assert "x-mini-llm-key" in refused.json()["error"]["message"]
    assert upstream.requests == []
    served = httpx.post(
        keyed.url + "/v1/chat/completions",
        json=body,
        headers={"x-mini-llm-key": GATEWAY_KEY, "Authorization": "Bearer sk-users-own-key-0001"},
    )
    assert served.status_code == 200
    seen = upstream.requests[-1]
    assert seen.key == "sk-users-own-key-0001"
    assert "x-mini-llm-key" not in {h.lower() for h in seen.headers}


# Off loopback only with keys ---------------------------------------------------------------------


def serve_exit(tmp_path: object, text: str, *args: str) -> subprocess.CompletedProcess[str]:
    path = write(tmp_path, text)  # type: ignore[arg-type]
    return subprocess.run(
        [*serve_argv(config=path, port=0), *args],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=30,
    )


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_serving_off_loopback_without_keys_is_refused(
    tmp_path: object, upstream: MockUpstream, host: str
) -> None:
    done = serve_exit(tmp_path, table(upstream), "--host", host)
    assert done.returncode == 1
    assert "server.auth.keys" in done.stderr and "server.auth.allow_anonymous" in done.stderr
    assert "listening" not in done.stdout


def test_allow_anonymous_serves_off_loopback_on_purpose(
    start_gateway: GatewayFactory, upstream: MockUpstream
) -> None:
    gateway = start_gateway(table(upstream, "  auth: {allow_anonymous: true}"), "--host", "0.0.0.0")
    assert httpx.get(f"http://127.0.0.1:{port_of(gateway)}/health").status_code == 200


def test_keys_let_it_serve_off_loopback(
    start_gateway: GatewayFactory, upstream: MockUpstream
) -> None:
    gateway = start_gateway(table(upstream, KEYS), "--host", "0.0.0.0")
    assert httpx.get(f"http://127.0.0.1:{port_of(gateway)}/health").json() == {"status": "ok"}


# Request signing ---------------------------------------------------------------------------------


@pytest.fixture
def signed(start_gateway: GatewayFactory, upstream: MockUpstream) -> GatewayProcess:
    return start_gateway(table(upstream, f"  auth: {{hmac_secret: {SECRET}}}"))


def signed_post(gateway: GatewayProcess, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(
        gateway.url + "/v1/chat/completions?trace=1",
        content=body,
        headers={"Content-Type": "application/json", **headers},
    )


def test_signed_requests(signed: GatewayProcess, upstream: MockUpstream) -> None:
    body = json.dumps({"model": "fast", "messages": []}).encode()
    headers = sign_request(SECRET, "POST", "/v1/chat/completions", body)
    assert signed_post(signed, body, headers).status_code == 200
    replayed = signed_post(signed, body, headers)
    assert (replayed.status_code, replayed.json()["error"]["code"]) == (401, "replayed_request")
    old = sign_request(SECRET, "POST", "/v1/chat/completions", body, now=time.time() - 301)
    expired = signed_post(signed, body, old)
    assert (expired.status_code, expired.json()["error"]["code"]) == (401, "signature_expired")
    wrong = sign_request("another-secret", "POST", "/v1/chat/completions", body)
    bad = signed_post(signed, body, wrong)
    assert (bad.status_code, bad.json()["error"]["code"]) == (401, "invalid_signature")
    other_body = signed_post(
        signed, body + b" ", sign_request(SECRET, "POST", "/v1/chat/completions", body)
    )
    assert other_body.json()["error"]["code"] == "invalid_signature"
    assert signed_post(signed, body, {}).status_code == 401
    assert len(upstream.requests) == 1
    assert "x-signature" not in {h.lower() for h in upstream.requests[0].headers}


# Slow and many clients -----------------------------------------------------------------------


def test_a_body_that_never_completes_gets_408_and_the_connection_closes(
    start_gateway: GatewayFactory, upstream: MockUpstream
) -> None:
    gateway = start_gateway(table(upstream, "  client_timeout_s: 0.5"))
    with socket.create_connection(("127.0.0.1", port_of(gateway)), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        started = time.monotonic()
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert 0.4 <= time.monotonic() - started < 3
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b'"request_timeout"' in answer
    assert upstream.requests == []


def test_headers_that_never_complete_are_cut_off(
    start_gateway: GatewayFactory, upstream: MockUpstream
) -> None:
    gateway = start_gateway(table(upstream, "  client_timeout_s: 0.5"))
    with socket.create_connection(("127.0.0.1", port_of(gateway)), timeout=5) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        started = time.monotonic()
        assert sock.recv(65536) == b""  # closed, quietly
    assert 0.4 <= time.monotonic() - started < 3


def test_over_max_concurrency_gets_503_at_once(
    start_gateway: GatewayFactory, upstream: MockUpstream
) -> None:
    gateway = start_gateway(
        table(upstream, "  max_concurrency: 1").replace("fast: mock:up-model", "fast: mock:hang")
    )

    def hold_the_only_slot() -> None:
        with contextlib.suppress(httpx.HTTPError):  # cut when the gateway stops
            chat(gateway)

    threading.Thread(target=hold_the_only_slot, daemon=True).start()
    wait_for(lambda: upstream.requests)
    started = time.monotonic()
    response = httpx.get(gateway.url + "/v1/models")
    assert time.monotonic() - started < 1
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "overloaded"
    assert response.headers["Retry-After"] == "1"


# Multipart --------------------------------------------------------------------------------------


def test_multipart_is_routed_by_its_model_field(
    open_gateway: GatewayProcess, upstream: MockUpstream
) -> None:
    audio = bytes(range(256)) * 40  # binary, with CR LF and dashes inside
    response = httpx.post(
        open_gateway.url + "/v1/audio/transcriptions",
        data={"model": "fast", "language": "en"},
        files={"file": ("a.wav", audio, "audio/wav")},
    )
    assert response.headers["x-mini-llm-route"] == "mock:up-model"
    seen = upstream.requests[-1]
    assert seen.path == "/v1/audio/transcriptions"
    assert b'name="model"\r\n\r\nup-model\r\n' in seen.body
    assert audio in seen.body
    missing = httpx.post(
        open_gateway.url + "/v1/audio/transcriptions", files={"file": ("a.wav", audio, "audio/wav")}
    )
    assert missing.status_code == 400


# Hostile input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "invalid_json"),
        (b'{"model": "fast", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}", "invalid_json"),
        (b'{"model": "fa\\u0001st"}', "invalid_model"),
        (b'{"model": "fast\\n"}', "invalid_model"),
        (b'{"model": "fast\\u0000"}', "invalid_model"),
        (b'{"model": "\xff\xfe"}', "invalid_json"),
        (b"\x00\x00\x00", "invalid_json"),
        (b'{"model": 1' + b"0" * 5000 + b"}", "invalid_json"),
        (b"[1, 2]", "invalid_json"),
        (b'"fast"', "invalid_json"),
    ],
    # Short names: pytest before 9.2 makes an id of the whole body, 200 kB for the first,
    # and the PYTEST_CURRENT_TEST variable holding it is too long to start a gateway with.
    ids=[
        "deep-array",
        "deep-value",
        "control-char-model",
        "newline-model",
        "nul-model",
        "not-utf8",
        "nul-bytes",
        "long-number",
        "array-body",
        "string-body",
    ],
)
def test_hostile_bodies_get_a_400_in_the_clients_shape(
    open_gateway: GatewayProcess, upstream: MockUpstream, body: bytes, code: str
) -> None:
    for path in ("/v1/chat/completions", "/v1/messages"):
        response = httpx.post(
            open_gateway.url + path, content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 400, response.text
        doc = response.json()
        if path == "/v1/messages":
            assert doc["type"] == "error" and doc["error"]["type"] == "invalid_request_error"
        else:
            assert doc["error"]["code"] == code
        assert response.headers["x-request-id"]
    assert upstream.requests == []
    assert chat(open_gateway).status_code == 200  # and it keeps serving
