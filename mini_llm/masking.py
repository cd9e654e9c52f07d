"""Secrets shown safely: masked keys (`sk-…abcd`) and URLs with secret query values masked."""

from __future__ import annotations

_SECRET_WORDS = ("auth", "key", "token", "secret", "signature", "password", "cookie")


def looks_secret(name: str) -> bool:
    """Header or query parameter names whose values must be masked when shown."""
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def mask_url(url: str) -> str:
    """A URL with the values of secret-looking query parameters masked."""
    base, sep, query = url.partition("?")
    if not sep:
        return url
    parts = []
    for pair in query.split("&"):
        name, eq, value = pair.partition("=")
        parts.append(f"{name}={mask(value)}" if eq and looks_secret(name) else pair)
    return base + "?" + "&".join(parts)


def mask(secret: str) -> str:
    """Show just enough of a secret to tell keys apart: ``sk-…abcd``."""
    if len(secret) < 8:
        return "…"
    if len(secret) < 16:
        return "…" + secret[-2:]
    return secret[:3] + "…" + secret[-4:]


def mask_userinfo(url: str) -> str:
    """A URL with the password of its user part masked: redis://:sk-…abcd@host:6379/0."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, hostpart = rest.rpartition("@")
    if not sep or not at:
        return url
    user, colon, password = userinfo.partition(":")
    return f"{scheme}://{user}{colon}{mask(password) if colon else ''}@{hostpart}"
