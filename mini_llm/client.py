"""Talking to a running gateway: where it is, one exchange, and `mini-llm chat`.

The client commands find the gateway at ``--url``, else ``$MINI_LLM_URL``, else
``http://127.0.0.1:3333``, and send ``$MINI_LLM_KEY`` as ``x-mini-llm-key`` when it is set.
They use the standard library's HTTP client: a blocking read is what lets Ctrl-C stop a
stream at once (closing the connection, so the gateway closes its upstream request).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

DEFAULT_URL = "http://127.0.0.1:3333"
URL_VARIABLE = "MINI_LLM_URL"
KEY_VARIABLE = "MINI_LLM_KEY"
KEY_HEADER = "x-mini-llm-key"
ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_ANTHROPIC_MAX_TOKENS = 1024
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130

Api = Literal["openai", "anthropic"]


class Unreachable(Exception):
    """The gateway did not answer at all (refused, timed out, not HTTP)."""


@dataclass(frozen=True)
class Gateway:
    """Where a running gateway is, and the key to send it."""

    url: str
    key: str | None = None
    timeout_s: float = 60.0

    @classmethod
    def find(cls, url: str | None, env: Mapping[str, str], timeout_s: float = 60.0) -> Gateway:
        chosen = url or env.get(URL_VARIABLE) or DEFAULT_URL
        return cls(chosen.rstrip("/"), env.get(KEY_VARIABLE) or None, timeout_s)

    def open(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send a request; the connection and its response, whose body is still to read."""
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise Unreachable(f"{self.url} is not an http:// or https:// URL")
        connection_class = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        sent = {"Accept": "application/json, text/event-stream", **(headers or {})}
        if self.key:
            sent[KEY_HEADER] = self.key
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        connection = connection_class(parts.hostname, parts.port, timeout=self.timeout_s)
        try:
            connection.request(method, parts.path + path, body=data, headers=sent)
            return connection, connection.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise Unreachable(str(exc) or type(exc).__name__) from None

    def get_json(self, path: str) -> tuple[int, Any]:
        connection, response = self.open("GET", path)
        try:
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise Unreachable(str(exc) or type(exc).__name__) from None
        finally:
            connection.close()
        try:
            return response.status, json.loads(raw)
        except ValueError:
            raise Unreachable(f"{path} did not answer JSON") from None


# One exchange: a request in either API shape, read whole or as a stream ----------------------


@dataclass
class Outcome:
    """What one request gave: status, route, timings, tokens, the text, or what went wrong."""

    status: int | None = None
    route: str = "-"
    request_id: str = "-"
    text: str = ""
    ttft_s: float | None = None
    total_s: float = 0.0
    input_tokens: int | None = None
    output_tokens: int | None = None
    error: str | None = None
    stopped: bool = False  # by Ctrl-C

    @property
    def ok(self) -> bool:
        return self.error is None and self.status == 200

    def summary(self) -> str:
        parts = [f"route {self.route}", f"id {self.request_id}"]
        if self.ttft_s is not None:
            parts.append(f"first token {_ms(self.ttft_s)}")
        parts.append(f"total {_ms(self.total_s)}")
        if self.input_tokens is not None or self.output_tokens is not None:
            parts.append(f"tokens {_num(self.input_tokens)} in / {_num(self.output_tokens)} out")
        return " · ".join(parts)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _num(value: int | None) -> str:
    return "?" if value is None else str(value)


def api_for(model: str, owner: str | None = None) -> Api:
    """Anthropic's shape for Claude models (`claude*`, `P:claude*`) and for models of a provider
    named `anthropic` (`P:` or `owner`, the model list's `owned_by`); else OpenAI's."""
    name = model.lower()
    provider, colon, upstream = name.partition(":")
    claude = name.startswith("claude") or upstream.startswith("claude")
    if claude or owner == "anthropic" or (colon and provider == "anthropic"):
        return "anthropic"
    return "openai"


def request_for(
    api: Api,
    model: str,
    messages: list[dict[str, str]],
    *,
    system: str | None,
    stream: bool,
    max_tokens: int | None,
) -> tuple[str, dict[str, Any], dict[str, str]]:
    """Path, body and headers of one request in the given API shape.

    Anthropic requires `max_tokens` (default 1024); OpenAI-style APIs get it only when given:
    reasoning models refuse it, and the provider's own default suits the others.
    """
    if api == "anthropic":
        limit = max_tokens or DEFAULT_ANTHROPIC_MAX_TOKENS
        body: dict[str, Any] = {"model": model, "max_tokens": limit, "messages": messages}
        if system:
            body["system"] = system
        if stream:
            body["stream"] = True
        return "/v1/messages", body, {"anthropic-version": ANTHROPIC_VERSION}
    chat = ([{"role": "system", "content": system}] if system else []) + messages
    body = {"model": model, "messages": chat}
    if max_tokens:
        body["max_tokens"] = max_tokens
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return "/v1/chat/completions", body, {}


def error_message(raw: bytes) -> str:
    """The message of an error body in either shape (OpenAI's or Anthropic's), else the text."""
    try:
        doc = json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace").strip()[:300] or "(no body)"
    error = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(error, dict):
        kind = error.get("code") or error.get("type")
        message = str(error.get("message", ""))
        return f"{kind}: {message}" if kind else message
    return json.dumps(doc)[:300]


def exchange(
    gateway: Gateway,
    api: Api,
    model: str,
    messages: list[dict[str, str]],
    *,
    system: str | None = None,
    stream: bool = True,
    max_tokens: int | None = None,
    on_text: Callable[[str], None] | None = None,
) -> Outcome:
    """One request and its whole answer; Ctrl-C stops it (`stopped`) and closes the connection."""
    path, body, headers = request_for(
        api, model, messages, system=system, stream=stream, max_tokens=max_tokens
    )
    outcome = Outcome()
    started = time.monotonic()

    def text(piece: str) -> None:
        if piece:
            if outcome.ttft_s is None:
                outcome.ttft_s = time.monotonic() - started
            outcome.text += piece
            if on_text is not None:
                on_text(piece)

    connection: http.client.HTTPConnection | None = None
    try:
        connection, response = gateway.open("POST", path, body, headers)
        outcome.status = response.status
        outcome.route = response.getheader("x-mini-llm-route") or "-"
        outcome.request_id = response.getheader("x-request-id") or "-"
        content_type = response.getheader("Content-Type") or ""
        if response.status != 200:
            outcome.error = f"{response.status}: {error_message(response.read())}"
        elif content_type.startswith("text/event-stream"):
            _read_stream(response, api, outcome, text)
        else:
            _read_whole(response.read(), api, outcome, text)
    except Unreachable as exc:
        outcome.error = f"unreachable: {exc}"
    except (OSError, http.client.HTTPException) as exc:
        outcome.error = f"connection lost: {exc or type(exc).__name__}"
    except KeyboardInterrupt:
        outcome.stopped = True
        outcome.error = "stopped"
    finally:
        if connection is not None:
            connection.close()  # on Ctrl-C too: the gateway then closes its upstream request
        outcome.total_s = time.monotonic() - started
    return outcome


def _read_whole(raw: bytes, api: Api, outcome: Outcome, text: Callable[[str], None]) -> None:
    try:
        doc = json.loads(raw)
        if api == "anthropic":
            text("".join(b.get("text", "") for b in doc["content"] if b.get("type") == "text"))
            usage = doc.get("usage") or {}
            outcome.input_tokens = usage.get("input_tokens")
            outcome.output_tokens = usage.get("output_tokens")
        else:
            text(doc["choices"][0]["message"].get("content") or "")
            usage = doc.get("usage") or {}
            outcome.input_tokens = usage.get("prompt_tokens")
            outcome.output_tokens = usage.get("completion_tokens")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        outcome.error = "the answer is not a " + (
            "message" if api == "anthropic" else "chat completion"
        )


def _events(response: http.client.HTTPResponse) -> Any:
    """(event name, data) of each server-sent event, as soon as its blank line arrives."""
    name: str | None = None
    data: list[str] = []
    while line := response.readline():
        line_text = line.decode("utf-8", "replace").rstrip("\r\n")
        if not line_text:
            if data:
                yield name, "\n".join(data)
            name, data = None, []
        elif line_text.startswith("event:"):
            name = line_text[6:].strip()
        elif line_text.startswith("data:"):
            data.append(line_text[5:].removeprefix(" "))
    if data:
        yield name, "\n".join(data)


def _read_stream(
    response: http.client.HTTPResponse, api: Api, outcome: Outcome, text: Callable[[str], None]
) -> None:
    finished = False
    for name, data in _events(response):
        if data == "[DONE]":
            finished = True
            continue
        try:
            doc = json.loads(data)
        except ValueError:
            continue
        if not isinstance(doc, dict):
            continue
        if name == "error" or doc.get("type") == "error" or "error" in doc:
            outcome.error = "stream error: " + error_message(data.encode())
            return
        if api == "anthropic":
            kind = doc.get("type")
            if kind == "message_start":
                outcome.input_tokens = (doc["message"].get("usage") or {}).get("input_tokens")
            elif kind == "content_block_delta" and doc["delta"].get("type") == "text_delta":
                text(doc["delta"].get("text", ""))
            elif kind == "message_delta":
                outcome.output_tokens = (doc.get("usage") or {}).get("output_tokens")
            elif kind == "message_stop":
                finished = True
        else:
            for choice in doc.get("choices") or []:
                text((choice.get("delta") or {}).get("content") or "")
            usage = doc.get("usage")
            if usage:
                outcome.input_tokens = usage.get("prompt_tokens")
                outcome.output_tokens = usage.get("completion_tokens")
    if not finished:
        outcome.error = "the stream ended before it was complete"


# mini-llm chat ---------------------------------------------------------------------------------


def chat(
    model: str,
    prompt: str | None,
    *,
    api: Api | None,
    system: str | None,
    url: str | None,
    max_tokens: int | None,
) -> int:
    """Stream answers to the terminal: one PROMPT, or a conversation read line by line."""
    # Ctrl-C is how a stream is stopped, even when started from a shell that ignores SIGINT.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    gateway = Gateway.find(url, os.environ)
    shape = api or api_for(model)
    history: list[dict[str, str]] = []
    interactive = sys.stdin.isatty()

    def answer(line: str) -> Outcome:
        history.append({"role": "user", "content": line})
        outcome = exchange(
            gateway, shape, model, history, system=system, max_tokens=max_tokens, on_text=_write
        )
        _write("\n")
        if outcome.ok:
            history.append({"role": "assistant", "content": outcome.text})
            print(f"[{outcome.summary()}]", file=sys.stderr, flush=True)
        else:
            history.pop()  # a failed or stopped turn is not part of the conversation
            print(f"[{outcome.error}] [{outcome.summary()}]", file=sys.stderr, flush=True)
        return outcome

    if prompt is not None:
        outcome = answer(prompt)
        if outcome.stopped:
            return EXIT_INTERRUPTED
        return EXIT_OK if outcome.ok else EXIT_FAILED
    print(
        f"chatting with {model} at {gateway.url} ({shape} API); "
        "Ctrl-C stops an answer, Ctrl-D or a second Ctrl-C leaves",
        file=sys.stderr,
    )
    while True:
        try:
            line = input("you> " if interactive else "")
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return EXIT_OK
        if line.strip():
            answer(line)


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
