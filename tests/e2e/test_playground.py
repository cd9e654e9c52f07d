"""The playground page at GET /, driven in real Chromium against a real gateway and mock upstream.

Chromium is Debian's (/usr/bin/chromium; `.ci/run` installs it), driven by Playwright's Python
package; Playwright's own browser download is never used. Outside CI the tests skip when
Chromium is missing; in CI they must run.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..conftest import GatewayFactory
from ..helpers import REPO, GatewayProcess
from ..mock_upstream import MockUpstream

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Set to a path to refresh the README's screenshot (mini_llm/playground/screenshot.png).
SCREENSHOT_ENV = "MINI_LLM_PLAYGROUND_SCREENSHOT"

if not CHROMIUM.exists() and not os.environ.get("CI"):
    pytest.skip("Chromium is not installed at /usr/bin/chromium", allow_module_level=True)
if not os.environ.get("CI"):
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402

TABLE = """
version: 1
server:
  reload: true
{server}
defaults:
  retry: {{attempts: 0}}
providers:
  mock:
    base_url: {mock}
    keys: [sk-mock-key-one-1111, sk-mock-key-two-2222]
  off:
    base_url: https://example.invalid/v1
    keys: ${{OFF_PROVIDER_KEY:-}}
routes:
  aliases:
    fast: mock:upstream-model
    claude-like: mock:claude-upstream
    hanging: mock:hang-stream
    breaking: mock:drop-stream
"""
ALIASES = ["fast", "claude-like", "hanging", "breaking"]
GATEWAY_KEY = "gw-key-playground-1234"
AUTH_ON = f"""  auth:
    keys:
      - {{name: tester, key: {GATEWAY_KEY}}}"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def gateway(start_gateway: GatewayFactory, upstream: MockUpstream) -> GatewayProcess:
    return start_gateway(TABLE.format(mock=upstream.url, server=""))


@pytest.fixture
def page(browser: Browser, gateway: GatewayProcess) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    opened.goto(gateway.url + "/")
    yield opened
    context.close()
    assert errors == []  # no uncaught JavaScript error


def pick(page: Page, model: str) -> None:
    expect(page.locator("#model option", has_text=model).first).to_be_attached()
    page.select_option("#model", model)


def send(page: Page, text: str) -> None:
    page.fill("#prompt", text)
    page.press("#prompt", "Control+Enter")


def last_answer(page: Page) -> Any:
    return page.locator(".turn.assistant").last


def test_the_page_is_self_contained_and_strictly_served(gateway: GatewayProcess) -> None:
    response = httpx.get(gateway.url + "/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "connect-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    page = response.text
    # Nothing is fetched from elsewhere: no external script, style, font or image.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "@import" not in page and "url(http" not in page
    assert httpx.post(gateway.url + "/", json={}).status_code == 404


def test_models_streamed_answer_route_request_id_and_usage(
    page: Page, upstream: MockUpstream, gateway: GatewayProcess
) -> None:
    options = page.locator("#model option")
    expect(options.first).to_have_attribute("value", "fast")
    listed = options.evaluate_all("(nodes) => nodes.map((n) => n.value)")
    assert listed[: len(ALIASES)] == ALIASES
    assert page.is_checked("#api-openai")
    page.fill("#system", "Answer in three words.")
    pick(page, "fast")
    send(page, "Count to three")

    answer = last_answer(page)
    expect(answer).to_have_attribute("data-done", "ok")
    expect(answer.locator(".text")).to_have_text("one two three ")
    meta = answer.locator(".meta")
    expect(meta.locator("[data-field=route]")).to_have_text("route mock:upstream-model")
    expect(meta.locator("[data-field=usage]")).to_have_text("tokens 5 in · 3 out")
    expect(meta.locator("[data-field=status]")).to_have_text("status 200")
    request_id = meta.locator("[data-field=request-id] code").inner_text()
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    expect(meta.locator("[data-field=ttft]")).to_contain_text("first token")
    expect(meta.locator("[data-field=total]")).to_contain_text("total")

    sent = upstream.requests[-1]
    assert (sent.path, sent.json["model"]) == ("/v1/chat/completions", "upstream-model")
    assert sent.json["stream"] is True and sent.json["stream_options"] == {"include_usage": True}
    assert sent.json["messages"] == [
        {"role": "system", "content": "Answer in three words."},
        {"role": "user", "content": "Count to three"},
    ]

    # The conversation goes on: the next request carries the first exchange.
    send(page, "Again")
    expect(page.locator(".turn.assistant")).to_have_count(2)
    expect(last_answer(page)).to_have_attribute("data-done", "ok")
    assert [m["content"] for m in upstream.requests[-1].json["messages"]] == [
        "Answer in three words.",
        "Count to three",
        "one two three ",
        "Again",
    ]
    screenshot = os.environ.get(SCREENSHOT_ENV)
    if screenshot:
        page.screenshot(
            path=str(REPO / screenshot) if not Path(screenshot).is_absolute() else screenshot
        )


def test_anthropic_messages_shape(page: Page, upstream: MockUpstream) -> None:
    page.get_by_text("Anthropic messages").click()
    page.fill("#max-tokens", "64")
    page.fill("#system", "Be terse.")
    pick(page, "claude-like")
    send(page, "Hello")
    answer = last_answer(page)
    expect(answer).to_have_attribute("data-done", "ok")
    expect(answer.locator(".text")).to_have_text("one two")
    expect(answer.locator("[data-field=usage]")).to_have_text("tokens 3 in · 2 out")
    expect(answer.locator("[data-field=finish]")).to_have_text("finish end_turn")
    expect(answer.locator("[data-field=route]")).to_have_text("route mock:claude-upstream")
    sent = upstream.requests[-1]
    assert sent.path == "/v1/messages"
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.json == {
        "model": "claude-upstream",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "Hello"}],
        "stream": True,
        "system": "Be terse.",
    }


def test_stop_closes_the_upstream_request(page: Page, upstream: MockUpstream) -> None:
    pick(page, "hanging")
    send(page, "Talk forever")
    answer = last_answer(page)
    expect(answer.locator(".text")).to_have_text("one ")  # the first chunk, then silence
    expect(page.locator("#send")).to_be_disabled()
    page.click("#stop")
    assert upstream.disconnected.wait(2), "the upstream request was not closed"
    expect(answer.locator(".note")).to_have_text("stopped")
    expect(page.locator("#send")).to_be_enabled()
    expect(answer).to_have_attribute("data-done", "failed")


def test_errors_are_shown_with_status_and_message(page: Page) -> None:
    page.select_option("#model", "\u0000other")
    expect(page.locator("#custom-model")).to_be_visible()
    page.fill("#custom-model", "no-such-model")
    send(page, "Anyone there?")
    error = last_answer(page).locator(".error")
    expect(error).to_contain_text("404 Not Found")
    expect(error).to_contain_text("model_not_found")
    expect(error).to_contain_text("no-such-model")

    page.get_by_text("Anthropic messages").click()  # the Anthropic error shape reads the same
    send(page, "And here?")
    expect(last_answer(page).locator(".error")).to_contain_text("404 Not Found")
    expect(last_answer(page).locator(".error")).to_contain_text("not_found_error")

    page.get_by_text("OpenAI chat").click()
    page.select_option("#model", "breaking")  # the upstream cuts the stream mid-way
    send(page, "Break")
    broken = last_answer(page)
    expect(broken.locator(".error")).to_contain_text("stream error")
    expect(broken.locator(".text")).to_have_text("one two ")


def test_status_panel_shows_providers_keys_and_reload_errors(
    page: Page, gateway: GatewayProcess
) -> None:
    status = page.locator("#status")
    mock = status.locator("[data-provider=mock]")
    expect(mock).to_contain_text("enabled")
    expect(mock).to_contain_text("2 keys")
    expect(mock.locator(".key")).to_have_count(2)
    expect(mock.locator(".key").first).to_have_text("sk-…1111 ok")
    off = status.locator("[data-provider=off]")
    expect(off).to_contain_text("disabled")
    expect(off.locator(".why")).to_contain_text("OFF_PROVIDER_KEY")
    expect(status.locator("[data-field=generation]")).to_have_text("1")
    expect(status.locator("[data-field=last-error]")).to_have_text("ok")
    expect(page.locator("#health-dot")).to_have_class("dot ok")
    assert "sk-mock-key-one-1111" not in page.content()

    # A broken edit of the table shows up at the next refresh, without reloading the page.
    args = list(gateway.process.args)  # type: ignore[arg-type]
    table = Path(args[args.index("-c") + 1])
    table.write_text(table.read_text() + "\nbogus: [\n")
    expect(status.locator("[data-field=last-error]")).to_contain_text(
        "mini-llm.yaml", timeout=10_000
    )


def test_gateway_key_field_when_auth_is_on(
    browser: Browser, start_gateway: GatewayFactory, upstream: MockUpstream
) -> None:
    secured = start_gateway(TABLE.format(mock=upstream.url, server=AUTH_ON), name="auth.yaml")
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(secured.url + "/")  # the page itself needs no key
        # /health answers only {"status": "ok"} and /v1/models 401: the page asks for a key.
        expect(page.locator("#key-panel")).to_be_visible()
        expect(page.locator("#key-reason")).to_contain_text("enter a gateway key")
        expect(page.locator("#status")).to_contain_text("need a key")
        expect(page.locator("#model option").first).to_have_text("(models need a gateway key)")
        page.fill("#custom-model", "fast")
        send(page, "hi")
        error = last_answer(page).locator(".error")
        expect(error).to_contain_text("401")
        expect(error).to_contain_text("authentication_error")
        assert upstream.requests == []  # nothing went upstream

        page.fill("#key", GATEWAY_KEY)
        page.press("#key", "Enter")
        expect(page.locator("#model option").first).to_have_attribute("value", "fast")
        expect(page.locator("#status [data-provider=mock]")).to_contain_text("enabled")
        assert page.evaluate("sessionStorage.getItem('mini-llm-key')") == GATEWAY_KEY
        assert page.evaluate("localStorage.length") == 0
        pick(page, "fast")
        send(page, "hi again")
        expect(last_answer(page)).to_have_attribute("data-done", "ok")
        expect(last_answer(page).locator(".text")).to_have_text("one two three ")
        # The gateway key stays with the gateway.
        assert "x-mini-llm-key" not in {h.lower() for h in upstream.requests[-1].headers}
        # A new tab of the same browser session keeps it; it never reaches localStorage.
        page.reload()
        expect(page.locator("#status [data-provider=mock]")).to_contain_text("enabled")
    finally:
        context.close()


def test_phone_width(browser: Browser, gateway: GatewayProcess) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        page = context.new_page()
        page.goto(gateway.url + "/")
        pick(page, "fast")
        page.fill("#prompt", "small screen")
        page.click("#send")
        expect(last_answer(page)).to_have_attribute("data-done", "ok")
        overflow = page.evaluate("document.scrollingElement.scrollWidth - window.innerWidth")
        assert overflow <= 0
        box = page.locator("#send").bounding_box()
        assert box is not None and box["x"] + box["width"] <= 390
    finally:
        context.close()


def test_health_json_shape_the_page_reads(gateway: GatewayProcess) -> None:
    """The fields the status panel renders are the ones /health serves."""
    doc = json.loads(httpx.get(gateway.url + "/health").text)
    assert {"path", "generation", "loaded_at", "last_error"} <= set(doc["config"])
    assert {"enabled", "keys", "key_states"} <= set(doc["providers"]["mock"])
    assert {"id", "state", "until", "failures"} <= set(doc["providers"]["mock"]["key_states"][0])
