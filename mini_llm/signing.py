"""Request signing for parent applications: `x-timestamp` and `x-signature: v1=HEX`.

The signature is HMAC-SHA256 with the shared secret over ``"{timestamp}.{METHOD}.{path}."``
followed by the body bytes; `path` is the request path without its query string. Standard
library only, so a parent can import it without the server's dependencies.
"""

from __future__ import annotations

import hashlib
import hmac
import time

WINDOW_S = 300
TIMESTAMP_HEADER = "x-timestamp"
SIGNATURE_HEADER = "x-signature"


def signature(secret: str, timestamp: str, method: str, path: str, body: bytes) -> str:
    message = f"{timestamp}.{method.upper()}.{path}.".encode() + body
    return "v1=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign_request(
    secret: str, method: str, path: str, body: bytes, *, now: float | None = None
) -> dict[str, str]:
    """The two headers that sign a request: ``{"x-timestamp": ..., "x-signature": ...}``."""
    timestamp = str(int(time.time() if now is None else now))
    return {
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: signature(secret, timestamp, method, path.split("?", 1)[0], body),
    }


class Replays:
    """Signatures seen within the window: a second use of one is a replay."""

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}

    def first_use(self, sig: str, now: float) -> bool:
        """Record a signature; False when it was already used within the window."""
        seen = self._seen
        if sig in seen and seen[sig] > now:
            return False
        if len(seen) >= 1024 and len(seen) % 1024 == 0:
            for old in [s for s, until in seen.items() if until <= now]:
                del seen[old]
        seen[sig] = now + 2 * WINDOW_S  # a timestamp may be up to WINDOW_S ahead of now
        return True


def verify(
    secret: str,
    method: str,
    path: str,
    body: bytes,
    timestamp: str | None,
    given: str | None,
    replays: Replays,
    *,
    now: float | None = None,
) -> str | None:
    """None when the request is signed and fresh; else the error code to answer 401 with."""
    current = time.time() if now is None else now
    if not timestamp or not given:
        return "signature_required"
    try:
        when = int(timestamp)
    except ValueError:
        return "invalid_signature"
    if abs(current - when) > WINDOW_S:
        return "signature_expired"
    expected = signature(secret, timestamp, method, path, body)
    if not hmac.compare_digest(expected.encode(), given.strip().encode()):
        return "invalid_signature"
    if not replays.first_use(expected, current):
        return "replayed_request"
    return None
