"""Access rules without sockets: loopback, Host names, signatures, multipart model fields."""

from __future__ import annotations

import pytest

from mini_llm.access import Access, exposure_problem, hostname, is_loopback
from mini_llm.config import GatewayAuth, GatewayKey, Server
from mini_llm.errors import ProxyError
from mini_llm.form import form_model, replace_value
from mini_llm.signing import Replays, sign_request, verify

from ..helpers import problems, where


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.9.9.9", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("app.localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.4", False),
        ("example.com", False),
        ("localhost.example.com", False),
    ],
)
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_host_header_names() -> None:
    assert hostname("[::1]:3333") == "::1"
    assert hostname("LocalHost:80") == "localhost"
    assert hostname("example.com.") == "example.com"
    assert hostname("127.0.0.1") == "127.0.0.1"


def test_exposure_needs_keys_or_a_deliberate_choice() -> None:
    assert exposure_problem(Server(host="127.0.0.1")) is None
    refused = exposure_problem(Server(host="0.0.0.0"))
    assert refused and "server.auth.keys" in refused and "allow_anonymous" in refused
    keyed = GatewayAuth(keys=(GatewayKey("a", "k" * 20),))
    assert exposure_problem(Server(host="0.0.0.0", auth=keyed)) is None
    assert exposure_problem(Server(host="::", auth=GatewayAuth(allow_anonymous=True))) is None


def test_keys_are_matched_and_never_shown() -> None:
    auth = GatewayAuth(keys=(GatewayKey("passy", "gw-0123456789abcdef"),), hmac_secret="s3cret")
    access = Access(Server(auth=auth))
    assert access.client({"x-mini-llm-key": "gw-0123456789abcdef"}).name == "passy"  # type: ignore[union-attr]
    assert access.client({"authorization": "Bearer gw-0123456789abcdef"}).via == "credential"  # type: ignore[union-attr]
    assert access.client({"authorization": "Basic gw-0123456789abcdef"}) is None
    assert access.client({"x-mini-llm-key": "gw-0123456789abcdeX"}) is None
    # the key's own header decides: a wrong one is not rescued by a right credential
    assert access.client({"x-mini-llm-key": "no", "x-api-key": "gw-0123456789abcdef"}) is None
    shown = repr(auth) + repr(Server(auth=auth))
    assert "0123456789abcdef" not in shown and "s3cret" not in shown and "passy" in shown


def test_signatures() -> None:
    body = b'{"model": "m"}'
    headers = sign_request("secret", "post", "/v1/chat/completions?x=1", body, now=1000)
    assert headers["x-timestamp"] == "1000"
    assert headers["x-signature"].startswith("v1=") and len(headers["x-signature"]) == 67

    def check(now: float, replays: Replays, **changes: object) -> str | None:
        args = {
            "secret": "secret",
            "method": "POST",
            "path": "/v1/chat/completions",
            "body": body,
            "timestamp": headers["x-timestamp"],
            "given": headers["x-signature"],
            **changes,
        }
        return verify(replays=replays, now=now, **args)  # type: ignore[arg-type]

    assert check(1000, Replays()) is None
    assert check(1300, Replays()) is None
    assert check(1301, Replays()) == "signature_expired"
    assert check(699, Replays()) == "signature_expired"
    assert check(1000, Replays(), body=body + b" ") == "invalid_signature"
    assert check(1000, Replays(), path="/v1/messages") == "invalid_signature"
    assert check(1000, Replays(), secret="other") == "invalid_signature"
    assert check(1000, Replays(), timestamp="soon") == "invalid_signature"
    assert check(1000, Replays(), given=None) == "signature_required"
    replays = Replays()
    assert check(1000, replays) is None
    assert check(1100, replays) == "replayed_request"


FORM = (
    b"--XyZ\r\n"
    b'Content-Disposition: form-data; name="file"; filename="model.wav"\r\n'
    b"Content-Type: audio/wav\r\n\r\n"
    b'RIFF--XyZ-not-a-boundary\r\nname="model"\r\n'
    b"\r\n--XyZ\r\n"
    b'Content-Disposition: form-data; name="model"\r\n\r\n'
    b"fast\r\n"
    b"--XyZ--\r\n"
)


def test_form_model_field() -> None:
    model, span = form_model(FORM, "multipart/form-data; boundary=XyZ")
    assert model == "fast"
    rewritten = replace_value(FORM, span, "up/model")
    assert rewritten == FORM.replace(b"\r\n\r\nfast\r\n", b"\r\n\r\nup/model\r\n")
    assert form_model(FORM, 'multipart/form-data; boundary="XyZ"')[0] == "fast"
    with pytest.raises(ProxyError) as missing:
        form_model(
            FORM.replace(b'name="model"', b'name="other"'), "multipart/form-data; boundary=XyZ"
        )
    assert missing.value.status == 400
    with pytest.raises(ProxyError):
        form_model(FORM, "multipart/form-data")


def test_star_origins_need_gateway_keys(tmp_path: object) -> None:
    found = problems(
        tmp_path,  # type: ignore[arg-type]
        """\
        version: 1
        server:
          allowed_origins: ["http://a.example", "*"]
        providers:
          p: {base_url: "http://127.0.0.1:1/v1", auth: none}
        """,
    )
    assert [(line, col) for line, col, _ in where(found)] == [(3, 41)]
    assert "server.auth.keys" in found[0].message
