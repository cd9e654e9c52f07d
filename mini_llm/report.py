"""What check-config and route show: facts as plain data, then rendered with rich."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .config import Config, Server
from .masking import mask, mask_url
from .routing import ModelNotFound, RoutingTable
from .translate import needs_translation, translated_path


def config_facts(config: Config) -> dict[str, Any]:
    """Everything check-config reports, as JSON-ready data; never a key."""
    providers = {}
    for name, p in config.providers.items():
        providers[name] = {
            "enabled": p.enabled,
            "disabled_reason": p.disabled_reason,
            "builtin": p.builtin,
            "base_url": mask_url(p.base_url),
            "auth": p.auth.describe(),
            "keys": len(p.keys),
            "headers": sorted(n for n, _ in p.headers),
            "query": sorted(n for n, _ in p.query),
            "timeouts": asdict(p.timeouts),
            "pool": asdict(p.pool),
            "retry": asdict(p.retry),
            "cooldown": asdict(p.cooldown),
            "models": list(p.models),
        }
    routes = config.routes
    return {
        "valid": True,
        "path": config.path,
        "providers": providers,
        "routes": {
            "aliases": {a: [str(t) for t in ts] for a, ts in routes.aliases.items()},
            "strategies": dict(routes.strategies),
            "weights": {
                a: [t.weight for t in ts]
                for a, ts in routes.aliases.items()
                if routes.strategies.get(a) == "weighted"
            },
            "prefixes": dict(routes.prefixes),
            "default": routes.default,
        },
        "server": _server_facts(config.server),
        "environment": [
            {"pointer": ptr, "variables": list(names)} for ptr, names in config.environment.items()
        ],
        "errors": [],
        "warnings": [w.as_dict() for w in config.warnings],
    }


def print_config(console: Console, facts: dict[str, Any]) -> None:
    providers = Table(title="Providers", title_justify="left")
    for column in ("name", "status", "base URL", "auth", "keys"):
        providers.add_column(column, overflow="fold")
    # Every value from the file goes through escape(): `[x]` in a name is text, not markup.
    for name, p in facts["providers"].items():
        status = (
            "[green]enabled[/]"
            if p["enabled"]
            else f"[yellow]disabled[/]: {escape(p['disabled_reason'])}"
        )
        where = f"builtin:{p['builtin']} (inside the gateway)" if p["builtin"] else p["base_url"]
        providers.add_row(
            escape(name), status, escape(where or "-"), escape(p["auth"]), str(p["keys"])
        )
    console.print(providers)

    routes = Table(title="Routes", title_justify="left")
    for column in ("rule", "match", "target"):
        routes.add_column(column, overflow="fold")
    r = facts["routes"]
    for alias, targets in r["aliases"].items():
        kind = r["strategies"].get(alias) or ("fallback" if len(targets) > 1 else "alias")
        weights = r["weights"].get(alias)
        if weights is not None:
            shown = ", ".join(f"{t} (weight {w:g})" for t, w in zip(targets, weights, strict=True))
        else:
            shown = " -> ".join(targets)
        routes.add_row(kind, escape(alias), escape(shown))
    for prefix, provider in sorted(r["prefixes"].items(), key=lambda kv: -len(kv[0])):
        routes.add_row("prefix", escape(f"{prefix}*"), escape(provider))
    routes.add_row("default", "*", escape(r["default"] or "- (unmatched models get 404)"))
    console.print(routes)

    server = Table(title="Server", title_justify="left")
    server.add_column("setting")
    server.add_column("value")
    env_by_pointer = {e["pointer"]: e["variables"] for e in facts["environment"]}
    for key, value in facts["server"].items():
        source = env_by_pointer.get(f"/server/{key}")
        note = f"  [dim](from {', '.join(source)})[/]" if source else ""
        server.add_row(key, f"{escape(str(value))}{note}")
    console.print(server)

    if facts["environment"]:
        env = Table(title="From the environment", title_justify="left")
        env.add_column("setting")
        env.add_column("variable")
        for entry in facts["environment"]:
            env.add_row(escape(entry["pointer"]), escape(", ".join(entry["variables"])))
        console.print(env)


def route_facts(table: RoutingTable, model: str, path: str) -> dict[str, Any]:
    """How MODEL resolves, with URL and headers as they would be sent (secrets masked)."""
    try:
        route = table.resolve(model)
    except ModelNotFound as exc:
        return {
            "model": model,
            "resolved": False,
            "error": str(exc),
            "suggestions": exc.suggestions,
        }
    tail = path[len("/v1") :] if path.startswith("/v1/") else path
    targets = []
    for target in route.targets:
        provider = table.providers[target.provider]
        upstream = table.upstreams[target.provider]
        key = provider.keys[0] if provider.keys else None
        translation = "none"
        upstream_tail = tail
        if needs_translation(path, provider.format):
            assert provider.format is not None
            other = translated_path(path, to=provider.format)
            translation = "unsupported" if other is None else "translated"
            if other is not None:
                upstream_tail = other.removeprefix("/v1")
        if provider.builtin:
            url: str | None = f"builtin:{provider.builtin}{upstream_tail}"  # answered in-process
        else:
            url = upstream.shown_url(upstream_tail, key) if provider.base_url else None
        targets.append(
            {
                "provider": target.provider,
                "model": target.model,
                "weight": target.weight,
                "enabled": provider.enabled,
                "disabled_reason": provider.disabled_reason,
                "builtin": provider.builtin,
                "url": url,
                "headers": dict(upstream.shown_headers(key)),
                "keys": len(provider.keys),
                "body_rewritten": target.model != model,
                "format": provider.format,
                "translation": translation,
            }
        )
    return {
        "model": model,
        "resolved": True,
        "rule": route.rule,
        "matched": route.matched,
        "explanation": route.describe(),
        "strategy": route.strategy,
        "targets": targets,
    }


def print_route(console: Console, facts: dict[str, Any]) -> None:
    if not facts["resolved"]:
        console.print(f"[red]not routed[/]: {escape(facts['error'])}", highlight=False)
        return
    console.print(
        f"[bold]{escape(facts['model'])}[/] matched {escape(facts['explanation'])}",
        highlight=False,
    )
    chain = len(facts["targets"]) > 1
    if facts["strategy"] != "fallback":
        console.print(
            f"strategy {facts['strategy']}: the first pick is spread over the targets; after a"
            " retryable outcome the others are tried in turn",
            highlight=False,
        )
    for i, t in enumerate(facts["targets"], 1):
        table = Table(
            show_header=False, title=f"target {i}" if chain else None, title_justify="left"
        )
        table.add_column("field", style="bold")
        table.add_column("value", overflow="fold")
        status = (
            "enabled"
            if t["enabled"]
            else f"[yellow]disabled[/]: {escape(t['disabled_reason'])} (503)"
        )
        table.add_row("provider", f"{escape(t['provider'])} ({status})")
        if facts["strategy"] == "weighted":
            table.add_row("weight", f"{t['weight']:g}")
        note = "" if not t["body_rewritten"] else "  [dim](body rewritten)[/]"
        table.add_row("upstream model", escape(t["model"]) + note)
        if t["format"] is not None:
            table.add_row("format", escape(_format_note(t["format"], t["translation"])))
        builtin = "  [dim](answered inside the gateway, no network)[/]" if t["builtin"] else ""
        table.add_row("url", escape(t["url"] or "-") + builtin)
        for name, value in t["headers"].items():
            table.add_row(escape(f"header {name}"), escape(value))
        if t["builtin"]:
            table.add_row("keys", "none needed")
        else:
            table.add_row("keys", str(t["keys"]) + (" (round-robin)" if t["keys"] > 1 else ""))
        console.print(table)


_FORMAT_NAMES = {"openai": "OpenAI", "anthropic": "Anthropic"}


def _format_note(provider_format: str, translation: str) -> str:
    other = "anthropic" if provider_format == "openai" else "openai"
    if translation == "translated":
        return f"{provider_format} ({_FORMAT_NAMES[other]}-format requests are translated)"
    if translation == "unsupported":
        return f"{provider_format} (this endpoint has no {provider_format} counterpart: 400)"
    return f"{provider_format} (same format: passed through)"


def _server_facts(server: Server) -> dict[str, Any]:
    """The server settings as shown: gateway keys by name, the signing secret masked."""
    facts = asdict(server)
    auth = server.auth
    facts["auth"] = {
        "keys": [key.name for key in auth.keys],
        "hmac_secret": mask(auth.hmac_secret) if auth.hmac_secret else None,
        "allow_anonymous": auth.allow_anonymous,
    }
    facts["allowed_origins"] = list(server.allowed_origins)
    facts["allowed_hosts"] = list(server.allowed_hosts)
    return facts
