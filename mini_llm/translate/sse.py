"""Server-sent events: split a byte stream into events at any chunk boundary, and write them."""

from __future__ import annotations

import re
from dataclasses import dataclass

# A line ends at \r\n, \n or \r (the SSE grammar allows all three).
_EOL = re.compile(rb"[\r\n]")


@dataclass(frozen=True)
class Event:
    event: str  # "" when the event has no `event:` field
    data: str


class EventReader:
    """Incremental SSE parser: holds only the unfinished line and the unfinished event."""

    def __init__(self) -> None:
        self._tail = b""
        self._event = ""
        self._data: list[str] = []
        self._started = False

    def feed(self, chunk: bytes) -> list[Event]:
        buf = self._tail + chunk if self._tail else chunk
        if not self._started and buf:
            if len(buf) < 3 and b"\xef\xbb\xbf".startswith(buf):
                self._tail = buf
                return []
            self._started = True
            buf = buf.removeprefix(b"\xef\xbb\xbf")
        events: list[Event] = []
        if b"\r" not in buf:  # the usual case: lines end at \n alone, split them at once
            lines = buf.split(b"\n")
            self._tail = lines.pop()
            for line in lines:
                self._line(line.decode("utf-8", "replace"), events)
            return events
        pos = 0
        while (match := _EOL.search(buf, pos)) is not None:
            end = match.start()
            if buf[end] == 0x0D:  # \r: wait for the next byte in case it is \n
                if end + 1 == len(buf):
                    break
                nxt = end + 2 if buf[end + 1] == 0x0A else end + 1
            else:
                nxt = end + 1
            self._line(buf[pos:end].decode("utf-8", "replace"), events)
            pos = nxt
        self._tail = buf[pos:]
        return events

    def close(self) -> list[Event]:
        """The end of the stream: a last event without its blank line still counts."""
        events: list[Event] = []
        if self._tail:
            self._line(self._tail.rstrip(b"\r").decode("utf-8", "replace"), events)
            self._tail = b""
        self._line("", events)
        return events

    def _line(self, line: str, events: list[Event]) -> None:
        if not line:
            if self._data or self._event:
                events.append(Event(self._event, "\n".join(self._data)))
            self._event, self._data = "", []
            return
        if line.startswith(":"):
            return  # a comment (keep-alive)
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value


def encode(data: str, event: str | None = None) -> bytes:
    """One event; ``data`` is one line of JSON (or ``[DONE]``)."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {data}\n\n".encode()
