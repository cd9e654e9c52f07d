"""Access lines (`server.log_requests`): one per request, as text or as one JSON object.

Every request gets its line, those refused before routing, failed and cancelled included.
Nothing here runs while `log_requests` is off.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import IO, Any

from .config import LogFormat
from .intake import Incoming
from .masking import mask
from .proxy import Served

access_log = logging.getLogger("mini_llm.access")


class _Formatter(logging.Formatter):
    """JSON lines bare, so each line parses; text lines like every other log line."""

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "bare", False):
            return record.getMessage()
        return super().format(record)


def configure(stream: IO[str]) -> None:
    """Access lines on their own handler (JSON lines must not carry a log prefix)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_Formatter("mini-llm %(levelname)s: %(message)s"))
    access_log.handlers[:] = [handler]
    access_log.setLevel(logging.INFO)
    access_log.propagate = False


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def log_request(
    incoming: Incoming,
    status: int,
    duration: float,
    first_byte: float | None,
    cancelled: bool,
    form: LogFormat,
) -> None:
    """Write the access line of one request."""
    request = incoming.request
    request_id = incoming.request_id
    served = incoming.served or Served()
    key = mask(served.key) if served.key else None
    known = incoming.client  # the gateway key's name, never the key
    client = known.name if known is not None else None
    usage = served.usage
    if form == "json":
        line: dict[str, Any] = {
            "ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "request_id": request_id,
            "method": request.method,
            "path": request.path,
            "status": None if cancelled else status,
            "route": None if served.rule == "-" else served.rule,
            "provider": served.provider,
            "upstream_model": served.upstream_model,
            "key": key,
            "client": client,
            "tries": served.tries,
            "ttfb_ms": _ms(first_byte),
            "duration_ms": _ms(duration),
            "input_tokens": usage.input if usage else None,
            "output_tokens": usage.output if usage else None,
            "cancelled": cancelled,
        }
        access_log.info("%s", json.dumps(line, ensure_ascii=False), extra={"bare": True})
        return
    access_log.info(
        "%s %s %s %.1fms ttfb=%s route=%s key=%s client=%s tries=%d in=%s out=%s id=%s%s",
        request.method,
        request.path,
        "-" if cancelled else status,
        duration * 1000,
        "-" if first_byte is None else f"{first_byte * 1000:.1f}ms",
        served.route,
        key or "-",
        client or "-",
        served.tries,
        "-" if usage is None or usage.input is None else usage.input,
        "-" if usage is None or usage.output is None else usage.output,
        request_id,
        " cancelled" if cancelled else "",
    )
