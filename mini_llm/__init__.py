"""mini-llm: an embedded, routing-only LLM gateway.

The package map, in the order a table and a request pass through it:

A routing table's life (one loader for `serve`, `check-config` and hot reload)
    source.py, interpolate.py  read the YAML with line marks, expand ${VARS}
    environ.py                 MINI_LLM__A__B and the named overrides
    schema.py, checks.py       JSON Schema and semantic checks, problems as FILE:LINE:COL
    config.py                  frozen settings; load_config(path, env) -> Config
    routing.py, upstream.py    compile_routes -> RoutingTable; per-provider request shaping
    pools.py, keys.py          connection pools and key state, carried across reloads
    balance.py                 strategies' target order and circuit breakers, likewise
    state/                     cooldowns, rate limits, cache: in memory, or Redis for replicas
    access.py                  who may use the gateway (keys, Host, Origin), per table
    reload.py                  watch the folder, load, swap the snapshot atomically

A request's life
    server.py                  bind, serve, drain on SIGTERM; workers.py for --workers N
    app.py                     create_app: /health, /v1/models, routed POST /v1/*
    front.py                   the front door around every endpoint: access rules, 500s
    observe.py, metrics.py     what each request came to, /metrics; accesslog.py its lines
    intake.py, form.py         request id, body within limits, the model it names
    signing.py                 request signatures (x-timestamp, x-signature)
    proxy.py                   targets -> tries -> one upstream request (see its docstring)
    first_content.py           a stream held until its first content, so a failed start retries
    translation.py, translate/ OpenAI <-> Anthropic formats, per target
    echo.py, echo_answers.py   the builtin echo provider, answered in-process
    relay.py                   the answer back to the client as it arrives; usage.py reads tokens
    errors.py                  gateway errors in the client's shape; upstream failures mapped

Around it
    cli.py, report.py          commands and their tables (the only users of rich)
    client.py, checkup.py      health, smoke and chat against a running gateway; top.py
    playground/                the page served at GET /
    contract.py                what a gateway and its starter agree on (argv, exit codes)
    sdk/, parent.py            Gateway / AsyncGateway for parents; the child's parent watch
    workers.py, metrics_dir.py the --workers supervisor and its shared metrics folder
    masking.py, suggest.py     masked secrets; "did you mean"
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .sdk import AsyncGateway, Gateway, GatewayConfigError, GatewayError, GatewayStartError
    from .signing import sign_request

__all__ = [
    "AsyncGateway",
    "Gateway",
    "GatewayConfigError",
    "GatewayError",
    "GatewayStartError",
    "__version__",
    "sign_request",
]


def __getattr__(name: str) -> Any:
    # The SDK is for parent applications; `mini-llm serve` starts faster without it.
    if name == "sign_request":
        from .signing import sign_request

        return sign_request
    if name in __all__:
        from . import sdk

        return getattr(sdk, name)
    raise AttributeError(f"module 'mini_llm' has no attribute {name!r}")
