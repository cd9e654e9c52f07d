"""Shape the upstream request for a provider: URL, headers, credentials (pure, no I/O)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl, quote_plus, urlencode, urlsplit

from .config import Provider
from .masking import looks_secret, mask

# RFC 9110 §7.6.1 hop-by-hop headers, plus what the client library sets for its own socket.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
CLIENT_CREDENTIALS = frozenset({"authorization", "x-api-key", "api-key"})
# The gateway's own credentials and signature never leave it.
_ALWAYS_DROPPED = HOP_BY_HOP | {
    "host",
    "content-length",
    "x-mini-llm-key",
    "x-timestamp",
    "x-signature",
}


class Upstream:
    """One provider's request shaping, compiled once per routing table."""

    __slots__ = (
        "_add",
        "_auth_header",
        "_auth_param",
        "_auth_prefix",
        "_drop",
        "_origin",
        "_path",
        "_query",
        "provider",
    )

    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        parts = urlsplit(provider.base_url)
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._path = parts.path.rstrip("/")  # the client (http1) encodes what must be
        self._query = tuple(parse_qsl(parts.query, keep_blank_values=True)) + provider.query
        auth = provider.auth
        self._auth_header: str | None = None
        self._auth_param: str | None = None
        self._auth_prefix = ""
        if auth.style == "bearer":
            self._auth_header, self._auth_prefix = "Authorization", "Bearer "
        elif auth.style == "header":
            self._auth_header, self._auth_prefix = auth.name, auth.prefix
        elif auth.style == "query":
            self._auth_param = auth.name
        drop = set(_ALWAYS_DROPPED)
        if auth.style != "passthrough":
            drop |= CLIENT_CREDENTIALS
        drop |= {name.lower() for name, _ in provider.headers}
        if self._auth_header:
            drop.add(self._auth_header.lower())
        self._drop = frozenset(drop)
        self._add = tuple((n, v) for n, v in provider.headers if v is not None)

    def url(self, tail: str, client_query: str = "", key: str | None = None) -> str:
        """Upstream URL for a request path tail (after /v1) and the client's raw query."""
        return self._origin + self.target(tail, client_query, key)

    def target(self, tail: str, client_query: str = "", key: str | None = None) -> str:
        """The request line's path and query: the base URL's path, the tail, the query."""
        fixed = list(self._query)
        if self._auth_param is not None and key is not None:
            fixed.append((self._auth_param, key))
        path = self._path + tail or "/"
        if not fixed:
            return path + ("?" + client_query if client_query else "")
        ours = {name for name, _ in fixed}
        pairs = [
            (k, v) for k, v in parse_qsl(client_query, keep_blank_values=True) if k not in ours
        ]
        return path + "?" + urlencode(pairs + fixed)

    def headers(self, client: Iterable[tuple[str, str]], key: str | None) -> list[tuple[str, str]]:
        """Client headers minus hop-by-hop, Host, Content-Length and credentials, plus ours."""
        drop = self._drop
        connection_named: set[str] = set()
        out: list[tuple[str, str]] = []
        for name, value in client:
            lowered = name.lower()
            if lowered in drop:
                if lowered == "connection":
                    connection_named = {t.strip().lower() for t in value.split(",")}
                continue
            out.append((name, value))
        if connection_named:
            out = [(n, v) for n, v in out if n.lower() not in connection_named]
        out.extend(self._add)
        if self._auth_header is not None and key is not None:
            out.append((self._auth_header, self._auth_prefix + key))
        return out

    def shown_headers(self, key: str | None) -> list[tuple[str, str]]:
        """The headers mini-llm adds, with secrets masked, for `route` and logs."""
        shown = [(n, mask(v) if looks_secret(n) else v) for n, v in self._add]
        if self._auth_header is not None:
            shown.append(
                (self._auth_header, self._auth_prefix + (mask(key) if key else "<no key>"))
            )
        if self.provider.auth.style == "passthrough":
            shown.append(("Authorization / x-api-key / api-key", "<the client's own>"))
        return shown

    def shown_url(self, tail: str, key: str | None) -> str:
        """The upstream URL with the key and secret-looking query values masked."""
        url = self.url(tail, "", key)
        base, sep, query = url.partition("?")
        pairs = parse_qsl(query, keep_blank_values=True) if sep else []
        shown = []
        for name, value in pairs:
            if name == self._auth_param or looks_secret(name):
                # Built by hand: urlencode would percent-encode the mask's ellipsis.
                masked = "…".join(quote_plus(part) for part in mask(value).split("…"))
                shown.append(f"{quote_plus(name)}={masked}")
            else:
                shown.append(urlencode([(name, value)]))
        if self._auth_param is not None and key is None:
            shown.append(f"{quote_plus(self._auth_param)}=<no key>")
        return base + ("?" + "&".join(shown) if shown else "")


_MODEL_KEY = b'"model"'
_COLON = re.compile(rb"[ \t\r\n]*:[ \t\r\n]*")


@lru_cache(maxsize=4096)  # model names: a few per routing table
def _json_string(value: str) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


def splice_model(body: bytes, old: str, new: str) -> bytes | None:
    """The client's body with only the model's value replaced, or None when unsure.

    Sure means: `"model"` occurs once (so it is the top-level key, spelt without escapes, as
    no `\\u` is anywhere) and is followed by `:` and exactly the JSON string of `old`.
    Anything else falls back to re-encoding the parsed document.
    """
    at = body.find(_MODEL_KEY)
    if at < 0 or body.find(_MODEL_KEY, at + 1) >= 0 or b"\\u" in body:
        return None
    colon = _COLON.match(body, at + len(_MODEL_KEY))
    if colon is None:
        return None
    pos = colon.end()
    old_json = _json_string(old)
    if not body.startswith(old_json, pos):
        return None
    return body[:pos] + _json_string(new) + body[pos + len(old_json) :]


def body_for(body: bytes, doc: dict[str, Any], asked: str, model: str) -> bytes:
    """The upstream body: the client's bytes when the model name is unchanged."""
    if model == asked:
        return body
    spliced = splice_model(body, asked, model)
    if spliced is not None:
        return spliced
    return json.dumps({**doc, "model": model}, ensure_ascii=False).encode()
