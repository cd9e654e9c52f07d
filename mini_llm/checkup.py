"""Is the gateway well? `mini-llm health` (its /health as tables) and `mini-llm smoke`.

`smoke` checks a gateway end to end: /health, the model list, then for each model one small
request and one streamed request in its API shape: Anthropic messages for models whose name
starts with `claude` or whose provider (the model list's `owned_by`) is named `anthropic`,
OpenAI chat completions for every other. By default it tries every model /v1/models lists
(the aliases and the providers' listed models), skipping those whose provider is disabled;
models named with `--models` are always tried. With `-c PATH` and no `--url` it starts a
gateway on a free port for the run and stops it afterwards.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .client import (
    EXIT_FAILED,
    EXIT_OK,
    KEY_VARIABLE,
    Gateway,
    Outcome,
    Unreachable,
    api_for,
    exchange,
)

SMOKE_PROMPT = "Say hello in one word."
SMOKE_MAX_TOKENS = 32  # Anthropic requires one; OpenAI-style requests go without


def health(url: str | None, *, as_json: bool, console: Console) -> int:
    """Print /health as tables (or JSON); exit 1 when the gateway does not answer."""
    gateway = Gateway.find(url, os.environ, timeout_s=10)
    try:
        status, doc = gateway.get_json("/health")
    except Unreachable as exc:
        if as_json:
            print(json.dumps({"url": gateway.url, "reachable": False, "error": str(exc)}))
        else:
            print(f"mini-llm: no gateway answers at {gateway.url} ({exc})", file=sys.stderr)
        return EXIT_FAILED
    healthy = status == 200 and isinstance(doc, dict) and doc.get("status") == "ok"
    if as_json:
        print(json.dumps(doc, indent=2, ensure_ascii=False))
        return EXIT_OK if healthy else EXIT_FAILED
    print_health(console, gateway.url, status, doc)
    return EXIT_OK if healthy else EXIT_FAILED


def print_health(console: Console, url: str, status: int, doc: Any) -> None:
    if not isinstance(doc, dict):
        console.print(f"[red]{escape(url)}/health answered {status} with {escape(str(doc))}[/]")
        return
    summary = Table(show_header=False, title="Gateway", title_justify="left")
    summary.add_column("field", style="bold")
    summary.add_column("value", overflow="fold")
    state = doc.get("status", "?")
    colour = "green" if status == 200 and state == "ok" else "red"
    summary.add_row("url", escape(url))
    summary.add_row("status", f"[{colour}]{escape(str(state))}[/] (HTTP {status})")
    for name in ("version", "pid"):
        if name in doc:
            summary.add_row(name, escape(str(doc[name])))
    config = doc.get("config") or {}
    for name in ("path", "generation", "loaded_at"):
        if name in config:
            summary.add_row(f"config {name}", escape(str(config[name])))
    if "last_error" in config:
        error = config["last_error"]
        summary.add_row("last reload", f"[red]{escape(error)}[/]" if error else "[green]ok[/]")
    console.print(summary)
    providers = doc.get("providers")
    if providers is None:
        console.print(
            f"[yellow]Only the liveness answer: this gateway has auth on. Set {KEY_VARIABLE}"
            " to a gateway key to see its providers.[/]"
        )
        return
    table = Table(title="Providers", title_justify="left")
    for column in ("name", "status", "keys", "key states"):
        table.add_column(column, overflow="fold")
    for name, facts in providers.items():
        enabled = facts.get("enabled")
        reason = facts.get("disabled_reason")
        shown = "[green]enabled[/]" if enabled else "[yellow]disabled[/]"
        if reason:
            shown += f": {escape(reason)}"
        states = []
        for key in facts.get("key_states") or []:
            line = f"{key.get('id')} {key.get('state')}"
            if key.get("until"):
                line += f" until {key['until']}"
            if key.get("failures"):
                line += f" ({key['failures']} failed)"
            states.append(escape(line))
        table.add_row(escape(name), shown, str(facts.get("keys", "-")), "\n".join(states) or "-")
    console.print(table)


# mini-llm smoke --------------------------------------------------------------------------------


@dataclass
class Check:
    model: str
    api: str
    mode: str  # "plain" or "stream"
    outcome: Outcome | None = None  # None: skipped
    skipped: str | None = None

    @property
    def failed(self) -> bool:
        return self.outcome is not None and not self.outcome.ok

    def as_dict(self) -> dict[str, Any]:
        o = self.outcome
        facts: dict[str, Any] = {"model": self.model, "api": self.api, "mode": self.mode}
        if o is None:
            return facts | {"ok": None, "skipped": self.skipped}
        return facts | {
            "ok": o.ok,
            "route": o.route,
            "status": o.status,
            "request_id": o.request_id,
            "ttft_ms": None if o.ttft_s is None else round(o.ttft_s * 1000, 1),
            "total_ms": round(o.total_s * 1000, 1),
            "input_tokens": o.input_tokens,
            "output_tokens": o.output_tokens,
            "error": o.error,
        }


def smoke(
    url: str | None,
    config: str | None,
    models: str | None,
    *,
    as_json: bool,
    timeout_s: float,
    console: Console,
) -> int:
    """Try every model (or those named) through a running gateway, or one started for it."""
    wanted = [m.strip() for m in models.split(",") if m.strip()] if models else None
    if url or not config:
        gateway = Gateway.find(url, os.environ, timeout_s)
        return _smoke(gateway, wanted, as_json=as_json, console=console)
    from .sdk import Gateway as Child
    from .sdk import GatewayConfigError, GatewayError

    try:
        with Child(config=config, port=0, start_timeout=30) as child:
            gateway = Gateway.find(child.url, os.environ, timeout_s)
            return _smoke(gateway, wanted, as_json=as_json, console=console)
    except GatewayConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
    except GatewayError as exc:
        print(f"mini-llm: could not start a gateway for {config}: {exc}", file=sys.stderr)
    return EXIT_FAILED


def _fail(as_json: bool, gateway: Gateway, message: str) -> int:
    if as_json:
        print(json.dumps({"url": gateway.url, "ok": False, "error": message}))
    else:
        print(f"mini-llm: {message}", file=sys.stderr)
    return EXIT_FAILED


def _smoke(gateway: Gateway, wanted: list[str] | None, *, as_json: bool, console: Console) -> int:
    try:
        status, doc = gateway.get_json("/health")
        if status != 200:
            return _fail(as_json, gateway, f"{gateway.url}/health answered {status}")
        providers = doc.get("providers") or {}
        status, listing = gateway.get_json("/v1/models")
    except Unreachable as exc:
        return _fail(as_json, gateway, f"no gateway answers at {gateway.url} ({exc})")
    if status != 200:
        return _fail(as_json, gateway, f"{gateway.url}/v1/models answered {status}")
    owners = {m.get("id"): m.get("owned_by") for m in listing.get("data") or []}
    names = wanted if wanted is not None else list(owners)
    if not names:
        return _fail(as_json, gateway, "no models to try: /v1/models lists none")

    checks: list[Check] = []
    for model in names:
        owner = owners.get(model)
        api = api_for(model, owner)
        provider = providers.get(owner) if owner else None
        disabled = wanted is None and provider is not None and not provider.get("enabled", True)
        for mode in ("plain", "stream"):
            check = Check(model, api, mode)
            if disabled:
                check.skipped = f"provider `{owner}` is disabled"
            else:
                check.outcome = exchange(
                    gateway,
                    api,
                    model,
                    [{"role": "user", "content": SMOKE_PROMPT}],
                    stream=mode == "stream",
                    max_tokens=SMOKE_MAX_TOKENS if api == "anthropic" else None,
                )
                if check.outcome.stopped:
                    raise KeyboardInterrupt
            checks.append(check)

    failed = any(c.failed for c in checks)
    if as_json:
        doc_out = {
            "url": gateway.url,
            "ok": not failed,
            "version": doc.get("version"),
            "generation": (doc.get("config") or {}).get("generation"),
            "results": [c.as_dict() for c in checks],
        }
        print(json.dumps(doc_out, indent=2, ensure_ascii=False))
    else:
        _print_checks(console, gateway.url, checks)
    return EXIT_FAILED if failed else EXIT_OK


def _print_checks(console: Console, url: str, checks: list[Check]) -> None:
    table = Table(title=f"Smoke test of {escape(url)}", title_justify="left")
    for column in ("model", "api", "mode", "route", "status", "first token", "total", "tokens"):
        table.add_column(column, overflow="fold")
    table.add_column("result", overflow="fold")
    for check in checks:
        o = check.outcome
        if o is None:
            row = ["-"] * 5 + [f"[dim]skipped: {escape(check.skipped or '')}[/]"]
        else:
            tokens = "-"
            if o.input_tokens is not None or o.output_tokens is not None:
                tokens = f"{o.input_tokens or 0} in / {o.output_tokens or 0} out"
            result = "[green]ok[/]" if o.ok else f"[red]{escape(o.error or 'failed')}[/]"
            row = [
                escape(o.route),
                str(o.status or "-"),
                "-" if o.ttft_s is None else f"{o.ttft_s * 1000:.0f} ms",
                f"{o.total_s * 1000:.0f} ms",
                tokens,
                result,
            ]
        table.add_row(escape(check.model), check.api, check.mode, *row)
    console.print(table)
    failures = sum(c.failed for c in checks)
    tried = sum(c.outcome is not None for c in checks)
    skipped = len(checks) - tried
    verdict = "[red]FAILED[/]" if failures else "[green]passed[/]"
    console.print(
        f"{verdict}: {tried - failures} of {tried} requests ok"
        + (f", {skipped} skipped" if skipped else "")
    )
