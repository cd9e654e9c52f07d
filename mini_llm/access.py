"""Who may use the gateway: gateway keys, the Host and Origin checks, CORS preflights.

`Access` is compiled from `server` settings once per routing table; the front door
(front.py) asks it about every request before any endpoint runs.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Mapping
from typing import Literal

from multidict import CIMultiDict

from .config import Server

# What the OpenAI and Anthropic SDKs and the playground send; x-stainless-* are matched apart.
CORS_HEADERS = (
    "authorization",
    "content-type",
    "x-api-key",
    "anthropic-version",
    "anthropic-beta",
    "anthropic-dangerous-direct-browser-access",
    "x-mini-llm-key",
    "x-request-id",
    "x-timestamp",
    "x-signature",
    "cache-control",
)
CORS_METHODS = "GET, POST, OPTIONS"
CORS_EXPOSED = "x-request-id, x-mini-llm-route, x-mini-llm-overhead-ms, x-upstream-request-id"
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost", "ip6-loopback"})
_HOST_MEMO_MAX = 64

# How the gateway key came: its own header, or in the client-credential headers.
Via = Literal["x-mini-llm-key", "credential"]


class Client:
    """An authenticated client: the gateway key's name and the header it came in."""

    __slots__ = ("name", "via")

    def __init__(self, name: str, via: Via) -> None:
        self.name = name
        self.via = via

    def __repr__(self) -> str:
        return f"Client({self.name!r}, via={self.via!r})"


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost; the wildcards 0.0.0.0 and :: are not loopback."""
    name = host.strip("[]").lower()
    if name in _LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def exposure_problem(server: Server) -> str | None:
    """Why `serve` must refuse to start on this host, or None."""
    if is_loopback(server.host) or server.auth.keys or server.auth.allow_anonymous:
        return None
    return (
        f"refusing to serve on {server.host}, which is not loopback, without gateway keys: "
        "anyone who reaches the port could spend the provider keys. Set `server.auth.keys`, "
        "or `server.auth.allow_anonymous: true` to serve without keys on purpose"
    )


def hostname(host: str) -> str:
    """The name in a Host header, without its port: `[::1]:3333` -> `::1`."""
    if host.startswith("["):
        return host[1 : host.find("]")].lower() if "]" in host else host.lower()
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.lower().rstrip(".") if host not in ("", ".") else host


class Access:
    """The access rules of one routing table."""

    __slots__ = (
        "_hosts",
        "_keys",
        "_memo",
        "any_origin",
        "hmac_secret",
        "key_limits",
        "keys_on",
        "origins",
    )

    def __init__(self, server: Server) -> None:
        self._keys = tuple((k.key.encode(), k.name) for k in server.auth.keys)
        self.keys_on = bool(self._keys)
        # Rate limits of the gateway keys that have them, by key name.
        self.key_limits = {k.name: k.limits for k in server.auth.keys if k.limits}
        self.hmac_secret = server.auth.hmac_secret
        self.origins = frozenset(o.lower() for o in server.allowed_origins if o != "*")
        self.any_origin = "*" in server.allowed_origins
        self._hosts = frozenset({*server.allowed_hosts, hostname(server.host)})
        self._memo: set[str] = set()

    def knows(self, host: str) -> bool:
        """A Host header already allowed once: the common case costs one set lookup."""
        return host in self._memo

    def host_allowed(self, host: str, local: str | None) -> bool:
        """A loopback name or address, the bound or local address, or an allowed host."""
        name = hostname(host)
        allowed = name in self._hosts or is_loopback(name) or name == local
        if allowed and len(self._memo) < _HOST_MEMO_MAX:
            self._memo.add(host)  # only allowed names: what a client sends cannot grow it
        return allowed

    def origin_allowed(self, origin: str, own: str) -> bool:
        """The gateway's own origin (the playground), a listed one, or any with `*`."""
        lowered = origin.lower().rstrip("/")
        return lowered == own.lower() or lowered in self.origins or self.any_origin

    def client(self, headers: Mapping[str, str]) -> Client | None:
        """The client a request's gateway key names, compared in constant time; None if none."""
        own = headers.get("x-mini-llm-key")
        if own is not None:
            name = self._match(own.strip())
            return Client(name, "x-mini-llm-key") if name is not None else None
        authorization = headers.get("authorization", "")
        scheme, _, token = authorization.partition(" ")
        candidates = [token.strip()] if scheme.lower() == "bearer" else []
        api_key = headers.get("x-api-key")
        if api_key is not None:
            candidates.append(api_key.strip())
        for candidate in candidates:
            name = self._match(candidate)
            if name is not None:
                return Client(name, "credential")
        return None

    def _match(self, candidate: str) -> str | None:
        given = candidate.encode()
        found: str | None = None
        for key, name in self._keys:  # every key is compared: the time says nothing
            if hmac.compare_digest(given, key):
                found = name
        return found


def add_cors_headers(origin: str | None, headers: CIMultiDict[str]) -> None:
    """Answers to an allowed cross-origin caller (`origin`) say so, errors and streams too."""
    if origin is not None:
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Expose-Headers"] = CORS_EXPOSED
        headers.add("Vary", "Origin")


def preflight_headers(origin: str, requested: str) -> dict[str, str]:
    """The answer to an allowed CORS preflight: the SDKs' headers, x-stainless-* included."""
    allowed = list(CORS_HEADERS)
    for name in requested.split(","):
        name = name.strip().lower()
        if name.startswith("x-stainless-") and name not in allowed:
            allowed.append(name)
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": CORS_METHODS,
        "Access-Control-Allow-Headers": ", ".join(allowed),
        "Access-Control-Max-Age": "600",
        "Vary": "Origin",
    }
