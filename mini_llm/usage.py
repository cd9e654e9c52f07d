"""Token usage read from answers as they pass: JSON bodies and SSE streams, never buffered.

OpenAI puts `usage` at the end of a JSON answer and in a last stream chunk (when the
request asked for `stream_options.include_usage`); Anthropic in its JSON answer and in the
`message_start` and `message_delta` events. The scanner looks for the bytes `"usage"`
followed by `:` and `{` and decodes only that small object: answer text, deltas and
`"usage": null` fields are never parsed. A stream split anywhere across chunks reads the
same as a whole one.

For an OpenAI chat stream that did not ask for usage, the gateway asks upstream
(`with_stream_usage`) and `StrippingScanner` takes the extra usage-only chunk back out, so
the client sees the events it asked for.
"""

from __future__ import annotations

import json
import zlib
from typing import Any, NamedTuple

_KEY = b'"usage"'
_TAIL = len(_KEY) - 1  # bytes kept from a chunk: a key split across two chunks is still seen
_SPACE = b" \t\r\n"
_COLON = ord(":")
_BRACE = ord("{")
_CLOSE = ord("}")
# A usage object is a few hundred bytes; a larger one (or garbage) is not waited for.
_WINDOW = 4096
# An event held back in a stripped stream is released as is beyond this size.
_HOLD_MAX = 1024 * 1024
_decode = json.JSONDecoder().raw_decode


class Usage(NamedTuple):
    """Tokens of one answer. `input` counts every input token, cached ones included."""

    input: int | None = None
    output: int | None = None
    cached_input: int | None = None

    def merged(self, later: Usage) -> Usage:
        """A stream's running total: what a later event says replaces what an earlier said."""
        return Usage(
            later.input if later.input is not None else self.input,
            later.output if later.output is not None else self.output,
            later.cached_input if later.cached_input is not None else self.cached_input,
        )


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def usage_of(doc: dict[str, Any]) -> Usage | None:
    """The tokens a `usage` object names, in OpenAI's or Anthropic's words; None if neither."""
    if "prompt_tokens" in doc or "completion_tokens" in doc:  # OpenAI chat, completions
        details = doc.get("prompt_tokens_details")
        cached = details.get("cached_tokens") if isinstance(details, dict) else None
        return Usage(
            _count(doc.get("prompt_tokens")), _count(doc.get("completion_tokens")), _count(cached)
        )
    if "input_tokens" not in doc and "output_tokens" not in doc:
        return None
    given = _count(doc.get("input_tokens"))
    output = _count(doc.get("output_tokens"))
    details = doc.get("input_tokens_details")
    if isinstance(details, dict):  # OpenAI responses: input_tokens counts the cached ones
        return Usage(given, output, _count(details.get("cached_tokens")))
    # Anthropic: input_tokens leaves out what was read from or written to the prompt cache.
    read = _count(doc.get("cache_read_input_tokens"))
    written = _count(doc.get("cache_creation_input_tokens"))
    total = None if given is None else given + (read or 0) + (written or 0)
    return Usage(total, output, read)


def _skip_space(data: bytes, at: int) -> int:
    end = len(data)
    while at < end and data[at] in _SPACE:
        at += 1
    return at


_CUT = object()  # the value goes on past the end of the data


def _object_after(data: bytes, at: int) -> Any:
    """The object that the key `"usage"` at `at` names; None if it names no object (a value
    spelt `"usage"`, `"usage": null`); _CUT if the data ends before the object does."""
    end = len(data)
    i = _skip_space(data, at + len(_KEY))
    if i < end:
        if data[i] != _COLON:
            return None
        i = _skip_space(data, i + 1)
    if i >= end:
        return _CUT
    if data[i] != _BRACE:
        return None
    try:
        value, _ = _decode(data[i : i + _WINDOW].decode("utf-8", "replace"))
    except ValueError:
        return _CUT if i + _WINDOW >= end else None
    return value if isinstance(value, dict) else None


def usage_in(body: bytes, status: int, content_type: str, encoding: str | None) -> Usage | None:
    """The usage of a whole answer: its last `usage` object (the top-level one, which both
    OpenAI and Anthropic write after the content)."""
    if status >= 300 or not content_type.endswith("json"):
        return None
    if encoding and encoding != "identity":
        scanner = scanner_for(status, content_type, encoding)
        if scanner is None:
            return None
        scanner.feed(body)
        return scanner.usage
    at = body.rfind(_KEY)
    if at < 0:
        return None
    found = _object_after(body, at)
    return usage_of(found) if isinstance(found, dict) else None


class UsageScanner:
    """Reads `usage` objects out of a byte stream fed in chunks of any size."""

    __slots__ = ("_carry", "usage")

    def __init__(self) -> None:
        self._carry = b""  # the end of the previous chunk, or an unfinished usage object
        self.usage: Usage | None = None

    def feed(self, chunk: bytes) -> bytes:
        """Take note of a chunk; the bytes to pass on (the chunk itself)."""
        if not chunk:
            return chunk
        carry = self._carry
        if carry and (len(carry) > _TAIL or _KEY in carry + chunk[: len(_KEY)]):
            self._carry = self._scan(carry + chunk)
        elif _KEY in chunk:
            self._carry = self._scan(chunk)
        else:
            self._carry = chunk[-_TAIL:] if len(chunk) >= _TAIL else (carry + chunk)[-_TAIL:]
        return chunk

    def close(self) -> bytes:
        """The end of the answer; bytes still to pass on (none)."""
        self._carry = b""
        return b""

    def _scan(self, data: bytes) -> bytes:
        """Read every complete usage object in data; what to keep for the next chunk."""
        start = 0
        while (at := data.find(_KEY, start)) >= 0:
            start = at + 1
            found = _object_after(data, at)
            if found is _CUT:
                return data[at:]  # the rest comes with the next chunk
            if found is not None:
                self._note(found)
        return data[-_TAIL:]

    def _note(self, doc: dict[str, Any]) -> None:
        found = usage_of(doc)
        if found is not None:
            self.usage = found if self.usage is None else self.usage.merged(found)


def _last_boundary(data: bytes) -> int:
    """Where the last complete SSE event ends (0 when none does)."""
    lf = data.rfind(b"\n\n")
    crlf = data.rfind(b"\r\n\r\n")
    return max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)


def _event_span(data: bytes, at: int) -> tuple[int, int]:
    """The event around position `at`, its blank line included; data ends with a boundary."""
    lf = data.rfind(b"\n\n", 0, at)
    crlf = data.rfind(b"\r\n\r\n", 0, at)
    start = max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)
    ends = [e + 2 for e in (data.find(b"\n\n", at),) if e >= 0]
    ends += [e + 4 for e in (data.find(b"\r\n\r\n", at),) if e >= 0]
    return start, min(ends) if ends else len(data)


def _event_data(event: bytes) -> Any:
    """The JSON document of an event's `data:` lines, or None."""
    lines = []
    for line in event.splitlines():
        if line.startswith(b"data:"):
            value = line[5:]
            lines.append(value[1:] if value.startswith(b" ") else value)
    try:
        return json.loads(b"\n".join(lines))
    except ValueError:
        return None


class StrippingScanner(UsageScanner):
    """An OpenAI chat stream whose usage chunk the gateway asked for: read it, drop it.

    Complete events pass at once; the unfinished end of a chunk is held until its blank line
    arrives (an SSE client acts on nothing before that, so it costs the client no time).
    """

    __slots__ = ("_held",)

    def __init__(self) -> None:
        super().__init__()
        self._held = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self._held + chunk if self._held else chunk
        cut = _last_boundary(data)
        if cut < len(data):
            self._held = data[cut:]
            data = data[:cut]
            if len(self._held) > _HOLD_MAX:  # not an event stream after all: let it through
                data, self._held = data + self._held, b""
        else:
            self._held = b""
        if _KEY not in data:
            return data
        return self._strip(data)

    def close(self) -> bytes:
        held, self._held = self._held, b""
        return held

    def _strip(self, data: bytes) -> bytes:
        kept: list[bytes] = []
        start = search = 0
        while (at := data.find(_KEY, search)) >= 0:
            first, last = _event_span(data, at)
            event = data[first:last]
            doc = _event_data(event)
            if (
                isinstance(doc, dict)
                and doc.get("choices") == []
                and isinstance(doc.get("usage"), dict)
            ):
                self._note(doc["usage"])
                kept.append(data[start:first])
                start = last
            else:
                self._scan(event)  # usage in a chunk that also carries content, or null
            search = max(last, at + 1)
        kept.append(data[start:])
        return b"".join(kept)


class _Inflating(UsageScanner):
    """A gzip or deflate body: scanned as it decompresses, passed on as it came."""

    __slots__ = ("_inflate",)

    def __init__(self) -> None:
        super().__init__()
        # wbits 32+15 takes a gzip or a zlib header.
        self._inflate: zlib._Decompress | None = zlib.decompressobj(32 + 15)

    def feed(self, chunk: bytes) -> bytes:
        inflate = self._inflate
        if inflate is None:
            return chunk
        data = chunk
        try:
            while data:  # in bounded pieces: a small body may inflate to a huge one
                UsageScanner.feed(self, inflate.decompress(data, 65536))
                data = inflate.unconsumed_tail
        except zlib.error:
            self._inflate = None  # not what it said it was: usage unknown, bytes untouched
        return chunk


def scanner_for(
    status: int, content_type: str, encoding: str | None, strip: bool = False
) -> UsageScanner | None:
    """A scanner for an answer that may carry usage; None for errors and other bodies."""
    if status >= 300:
        return None
    if content_type == "text/event-stream":
        if encoding:
            return None
        return StrippingScanner() if strip else UsageScanner()
    if not content_type.endswith("json"):
        return None
    if not encoding or encoding == "identity":
        return UsageScanner()
    if encoding in ("gzip", "deflate"):
        return _Inflating()
    return None  # br, zstd: not read


def wants_stream_usage(tail: str, doc: dict[str, Any]) -> bool:
    """An OpenAI chat stream that did not ask for usage (the upstream path is `tail`)."""
    if tail != "/chat/completions" or doc.get("stream") is not True:
        return False
    options = doc.get("stream_options")
    if options is None:
        return True
    return isinstance(options, dict) and options.get("include_usage") is not True


_ASK_USAGE = b',"stream_options":{"include_usage":true}'


def with_stream_usage(body: bytes, doc: dict[str, Any], model: str) -> bytes:
    """The upstream body `body` (the client's, model already set), asking for the usage chunk.

    Without stream_options, the option goes in before the object's closing brace: the
    body is not encoded again (a long conversation costs a copy, not a json.dumps).
    """
    if "stream_options" not in doc:
        end = len(body)
        while end and body[end - 1] in _SPACE:
            end -= 1
        if end and body[end - 1] == _CLOSE:
            return body[: end - 1] + _ASK_USAGE + body[end - 1 :]
    options = doc.get("stream_options")
    asked = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return json.dumps({**doc, "model": model, "stream_options": asked}, ensure_ascii=False).encode()
