"""Semantic checks: what the schema cannot say (references, header names, URLs)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from .source import Document, Location, Problem
from .suggest import nearest

_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def mapping(value: Any) -> dict[str, Any]:
    """The value if it is a mapping, else an empty one: checks run even on broken input."""
    return value if isinstance(value, dict) else {}


def check_semantics(doc: Document) -> list[Problem]:
    data = mapping(doc.data)
    providers = mapping(data.get("providers"))
    names = sorted(providers)
    problems: list[Problem] = []

    def unknown(location: Location, name: str, what: str) -> Problem:
        close = nearest(name, names)
        hint = f"; did you mean `{close[0]}`?" if close else ""
        configured = ", ".join(f"`{n}`" for n in names) if names else "none"
        return doc.problem(
            location,
            f"{what} `{name}`, which is not a configured provider{hint} (configured: {configured})",
        )

    def check_target(location: Location, target: Any) -> None:
        if not isinstance(target, str):
            return
        provider, sep, model = target.partition(":")
        if not sep or not provider or not model:
            # The schema's pattern says so already; kept for data that skipped it.
            problems.append(doc.problem(location, f"`{target}` must be `provider:model`"))
        elif provider not in providers:
            problems.append(unknown(location, provider, f"target `{target}` names provider"))

    routes = mapping(data.get("routes"))
    for alias, target in mapping(routes.get("aliases")).items():
        location: Location = ("routes", "aliases", alias)
        items: Any = target
        item_location = location
        if isinstance(target, dict):  # {strategy, targets}
            items = target.get("targets")
            item_location = (*location, "targets")
            if isinstance(items, list) and target.get("strategy") == "weighted":
                weights = [i.get("weight", 1) if isinstance(i, dict) else 1 for i in items]
                if all(isinstance(w, (int, float)) for w in weights) and not any(weights):
                    problems.append(
                        doc.problem(
                            (*location, "targets"),
                            "every weight is 0: strategy weighted needs one target above 0",
                        )
                    )
        if isinstance(items, list):
            seen: dict[str, int] = {}
            for i, entry in enumerate(items):
                item = entry.get("target") if isinstance(entry, dict) else entry
                at: Location = (*item_location, i)
                if isinstance(entry, dict):
                    at = (*at, "target")
                if isinstance(item, str) and item in seen:
                    problems.append(
                        doc.problem(
                            at,
                            f"`{item}` is already in this fallback chain"
                            f" (item {seen[item] + 1}); a target is tried once",
                        )
                    )
                    continue
                check_target(at, item)
                if isinstance(item, str):
                    seen[item] = i
        else:
            check_target(location, target)
    for prefix, provider in mapping(routes.get("prefixes")).items():
        if isinstance(provider, str) and provider not in providers:
            problems.append(
                unknown(
                    ("routes", "prefixes", prefix), provider, f"prefix `{prefix}` names provider"
                )
            )
    default = routes.get("default")
    if isinstance(default, str) and default not in providers:
        problems.append(unknown(("routes", "default"), default, "default names provider"))

    for name, spec in providers.items():
        problems += _check_provider(doc, name, mapping(spec))
    problems += _check_access(doc, mapping(data.get("server")))
    return problems


def _check_access(doc: Document, server: dict[str, Any]) -> list[Problem]:
    """Gateway keys: names and keys used once; `*` origins only behind keys."""
    problems: list[Problem] = []
    auth = mapping(server.get("auth"))
    keys = auth.get("keys")
    items = keys if isinstance(keys, list) else []
    names: dict[str, int] = {}
    secrets: dict[str, int] = {}
    for i, item in enumerate(items):
        name = item.get("name") if isinstance(item, dict) else None
        key = item.get("key") if isinstance(item, dict) else item
        where: Location = ("server", "auth", "keys", i)
        if isinstance(name, str):
            if name in names:
                problems.append(
                    doc.problem((*where, "name"), f"gateway key name `{name}` is used twice")
                )
            names.setdefault(name, i)
        if isinstance(key, str) and key.strip():
            if key.strip() in secrets:
                problems.append(
                    doc.problem(where, f"this gateway key is item {secrets[key.strip()] + 1} too")
                )
            secrets.setdefault(key.strip(), i)
    has_keys = bool(secrets) or (isinstance(keys, str) and bool(keys.strip(" ,")))
    origins = server.get("allowed_origins")
    if isinstance(origins, list) and "*" in origins and not has_keys:
        problems.append(
            doc.problem(
                ("server", "allowed_origins", origins.index("*")),
                "`*` lets every web page call the gateway: it needs `server.auth.keys`",
            )
        )
    return problems


def _check_provider(doc: Document, name: str, spec: dict[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    base: Location = ("providers", name)
    url = spec.get("base_url")
    if isinstance(url, str) and url.strip():
        reason = _url_problem(url.strip())
        if reason:
            problems.append(doc.problem((*base, "base_url"), reason))
    for header, value in mapping(spec.get("headers")).items():
        if not _HEADER_NAME.match(header):
            problems.append(
                doc.problem(
                    (*base, "headers", header), f"`{header}` is not a valid header name", key=True
                )
            )
        if isinstance(value, str) and ("\r" in value or "\n" in value):
            problems.append(
                doc.problem(
                    (*base, "headers", header), f"the value of header `{header}` has a line break"
                )
            )
    auth = spec.get("auth", "bearer")
    style = auth.get("style") if isinstance(auth, dict) else auth
    auth_header: str | None = "Authorization" if style == "bearer" else None
    if isinstance(auth, dict) and style == "header":
        named = auth.get("header")
        if isinstance(named, str) and named and not _HEADER_NAME.match(named):
            problems.append(
                doc.problem((*base, "auth", "header"), f"`{named}` is not a valid header name")
            )
        auth_header = named if isinstance(named, str) else None
    if auth_header:
        # Two values for one header; a null (remove it) is harmless and allowed.
        for header, value in mapping(spec.get("headers")).items():
            if header.lower() == auth_header.lower() and value is not None:
                problems.append(
                    doc.problem(
                        (*base, "headers", header),
                        f"`{header}` is set by `auth` (the key goes there); remove it from"
                        " headers, or use `auth: none` to send a fixed value",
                        key=True,
                    )
                )
    if isinstance(auth, dict) and style == "query":
        param = auth.get("param")
        if isinstance(param, str) and param in mapping(spec.get("query")):
            problems.append(
                doc.problem(
                    (*base, "query", param),
                    f"query parameter `{param}` is set by `auth` (the key goes there)",
                    key=True,
                )
            )
    return problems


def _url_problem(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "base_url must be an http:// or https:// URL with a host"
    if any(c.isspace() for c in url):
        return "base_url must not contain spaces"
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number 0-65535
    except ValueError:
        return "base_url has an invalid port"
    if parts.fragment:
        return "base_url must not have a #fragment"
    return None
