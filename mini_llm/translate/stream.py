"""What both stream translators share: feed bytes, get bytes; errors; the end of the stream."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from .base import Format
from .errors import error_event
from .sse import Event, EventReader

ENDED_EARLY = "the provider's stream ended before its last event"


class StreamTranslator(ABC):
    """Translates an upstream SSE stream event by event into the client's format.

    ``feed`` takes the upstream's bytes as they arrive, split anywhere, and returns the bytes
    to write to the client at once (possibly none); only an unfinished event is held back.
    ``close`` ends the stream: a stream that stopped before its terminal event gets an error
    event, never an invented end. ``fail`` writes the error event for a broken upstream.
    """

    client_format: ClassVar[Format]

    def __init__(self, client_model: str) -> None:
        self.client_model = client_model
        self.complete = False  # the upstream's terminal event was translated
        self.failed = False  # an error event was written
        self._reader = EventReader()

    @property
    def ended(self) -> bool:
        return self.complete or self.failed

    def feed(self, chunk: bytes) -> bytes:
        if self.ended:
            return b""  # after the end nothing more goes to the client
        return self._translate(self._reader.feed(chunk))

    def close(self) -> bytes:
        if self.ended:
            return b""
        out = self._translate(self._reader.close())
        return out + self.fail(ENDED_EARLY)

    def fail(
        self, message: str, *, kind: str | None = None, code: str | None = "upstream_stream_error"
    ) -> bytes:
        """The error event that ends the client's stream (nothing once it has ended)."""
        if self.ended:
            return b""
        self.failed = True
        return error_event(message, to=self.client_format, kind=kind, code=code)

    def _translate(self, events: list[Event]) -> bytes:
        out = bytearray()
        for event in events:
            if self.ended:
                break
            out += self._event(event)
        return bytes(out)

    @abstractmethod
    def _event(self, event: Event) -> bytes:
        """One upstream event as the client's bytes."""
