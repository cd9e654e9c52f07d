"""Cache keys for identical requests, and answers packed as bytes for either backend."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


def canonical_json(doc: Any) -> bytes:
    """The same JSON for the same document: sorted keys, no whitespace."""
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


def cache_key(
    path: str, targets: Sequence[str], body: Mapping[str, Any] | bytes, client: str | None
) -> str:
    """A hash of what makes two requests the same request.

    The API path, the resolved targets (`provider:model`, so a changed route never serves an
    old answer), the body as canonical JSON (a multipart body as its bytes), and the gateway
    key's name, so tenants never share entries.
    """
    digest = hashlib.sha256()
    body_bytes = body if isinstance(body, bytes) else canonical_json(body)
    for part in (path.encode(), "\x1f".join(targets).encode(), (client or "").encode()):
        digest.update(len(part).to_bytes(8, "big"))  # lengths first: no two splits collide
        digest.update(part)
    digest.update(body_bytes)
    return digest.hexdigest()


@dataclass(frozen=True)
class CachedAnswer:
    """A complete 200 answer: a JSON body, or a whole event stream to replay as it was."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def to_bytes(self) -> bytes:
        head = json.dumps({"status": self.status, "headers": list(self.headers)})
        return head.encode() + b"\n" + self.body

    @classmethod
    def from_bytes(cls, data: bytes) -> CachedAnswer | None:
        """The answer, or None for bytes that are not one (never an exception)."""
        head, sep, body = data.partition(b"\n")
        if not sep:
            return None
        try:
            meta = json.loads(head)
            headers = tuple((str(k), str(v)) for k, v in meta["headers"])
            return cls(int(meta["status"]), headers, body)
        except (ValueError, KeyError, TypeError):
            return None
