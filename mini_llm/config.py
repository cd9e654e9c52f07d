"""Frozen settings and the one loader: load_config(path, env) -> Config."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from .checks import check_semantics, mapping
from .environ import apply_overrides
from .masking import mask, mask_url, mask_userinfo
from .schema import validate
from .source import ConfigError, Document, Location, Problem, pointer, read_document

AuthStyle = Literal["bearer", "header", "query", "none", "passthrough"]
ApiFormat = Literal["openai", "anthropic"]
LogFormat = Literal["text", "json"]
DEFAULT_CONFIG_NAME = "mini-llm.yaml"


@dataclass(frozen=True)
class Timeouts:
    connect_s: float = 10.0
    read_s: float = 600.0


@dataclass(frozen=True)
class Pool:
    limit: int = 200
    limit_per_host: int = 100
    keepalive_s: float = 30.0


@dataclass(frozen=True)
class Retry:
    attempts: int = 2
    backoff_s: float = 0.25
    max_backoff_s: float = 5.0


@dataclass(frozen=True)
class Cooldown:
    rate_limited_s: float = 30.0
    auth_failed_s: float = 300.0


@dataclass(frozen=True)
class Limits:
    """Requests and tokens per minute for one scope (a provider, a gateway key); None: no limit."""

    rpm: int | None = None
    tpm: int | None = None

    def __bool__(self) -> bool:
        return self.rpm is not None or self.tpm is not None


@dataclass(frozen=True)
class Auth:
    style: AuthStyle = "bearer"
    name: str = ""  # header name (style header) or query parameter (style query)
    prefix: str = ""

    @property
    def needs_key(self) -> bool:
        return self.style in ("bearer", "header", "query")

    def describe(self) -> str:
        if self.style == "header":
            return f"header {self.name}" + (f" (prefix {self.prefix!r})" if self.prefix else "")
        if self.style == "query":
            return f"query ?{self.name}="
        return self.style


Strategy = Literal["fallback", "weighted", "least_busy", "latency"]


@dataclass(frozen=True)
class Health:
    """The circuit breaker: `failures` retryable outcomes in a row open it for `open_s`."""

    failures: int = 5
    open_s: float = 30.0


@dataclass(frozen=True)
class Provider:
    name: str
    base_url: str
    auth: Auth
    keys: tuple[str, ...] = field(repr=False)
    headers: tuple[tuple[str, str | None], ...] = ()
    query: tuple[tuple[str, str], ...] = ()
    # OpenAI chat streams: ask for the usage chunk, then hide it from a client that did not.
    stream_usage: bool = True
    timeouts: Timeouts = Timeouts()
    pool: Pool = Pool()
    retry: Retry = Retry()
    cooldown: Cooldown = Cooldown()
    health: Health = Health()
    models: tuple[str, ...] = ()
    disabled_reason: str | None = None
    # None: requests go in the format they arrived in (no translation).
    format: ApiFormat | None = None
    drop_unsupported: bool = False
    default_max_tokens: int = 4096
    # A provider served inside the gateway (`echo`): no base_url, no keys, no network.
    builtin: str | None = None
    limits: Limits = Limits()

    @property
    def enabled(self) -> bool:
        return self.disabled_reason is None

    def __repr__(self) -> str:
        if self.builtin:
            return f"Provider(name={self.name!r}, builtin={self.builtin!r})"
        keys = ", ".join(mask(k) for k in self.keys)
        url = mask_url(self.base_url)
        return f"Provider(name={self.name!r}, base_url={url!r}, keys=[{keys}])"


@dataclass(frozen=True)
class GatewayKey:
    """A key clients send to use the gateway; only its name is ever shown."""

    name: str
    key: str = field(repr=False)
    limits: Limits = Limits()


@dataclass(frozen=True)
class GatewayAuth:
    keys: tuple[GatewayKey, ...] = ()
    hmac_secret: str = field(default="", repr=False)
    allow_anonymous: bool = False

    def __repr__(self) -> str:
        names = ", ".join(k.name for k in self.keys)
        signing = "on" if self.hmac_secret else "off"
        anonymous = self.allow_anonymous
        return f"GatewayAuth(keys=[{names}], signing={signing}, allow_anonymous={anonymous})"


@dataclass(frozen=True)
class Server:
    host: str = "127.0.0.1"
    port: int = 3333
    port_retries: int = 10
    max_body_bytes: int = 10 * 1024 * 1024
    shutdown_grace_s: float = 30.0
    log_requests: bool = False
    log_format: LogFormat = "text"
    reload: bool = True
    auth: GatewayAuth = GatewayAuth()
    allowed_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    client_timeout_s: float = 60.0
    max_concurrency: int = 1024


@dataclass(frozen=True)
class Target:
    provider: str
    model: str
    weight: float = field(default=1.0, compare=False)

    def __str__(self) -> str:
        return f"{self.provider}:{self.model}"


@dataclass(frozen=True)
class Routes:
    aliases: Mapping[str, tuple[Target, ...]] = field(default_factory=dict)
    # Aliases that spread load; any other alias is a fallback chain.
    strategies: Mapping[str, Strategy] = field(default_factory=dict)
    prefixes: Mapping[str, str] = field(default_factory=dict)
    default: str | None = None


@dataclass(frozen=True)
class State:
    """Where cooldowns, rate-limit counters and cache entries live: Redis, or "" for memory."""

    redis: str = field(default="", repr=False)

    def __repr__(self) -> str:
        return f"State(redis={mask_userinfo(self.redis)!r})"


@dataclass(frozen=True)
class Cache:
    enabled: bool = False
    ttl_s: float = 60.0
    max_entries: int = 1000
    max_body_bytes: int = 1024 * 1024


@dataclass(frozen=True)
class Config:
    path: str
    server: Server
    providers: Mapping[str, Provider]
    routes: Routes
    # JSON pointer -> environment variables that produced the value.
    environment: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    warnings: tuple[Problem, ...] = ()
    state: State = State()
    cache: Cache = Cache()


def find_config(explicit: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path:
    """-c, else $MINI_LLM_CONFIG, else ./mini-llm.yaml, else the packaged default."""
    if explicit:
        return Path(explicit)
    if env.get("MINI_LLM_CONFIG"):
        return Path(env["MINI_LLM_CONFIG"])
    local = Path(DEFAULT_CONFIG_NAME)
    if local.exists():
        return local
    return packaged_default()


def packaged_default() -> Path:
    packaged = resources.files("mini_llm") / "_data" / DEFAULT_CONFIG_NAME
    if packaged.is_file():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / DEFAULT_CONFIG_NAME


def load_config(path: str | os.PathLike[str], env: Mapping[str, str]) -> Config:
    """Read, interpolate, override, validate and check a routing table.

    Raises ConfigError with every problem found, sorted by line.
    """
    doc = read_document(Path(path), env, display=str(path))
    problems = apply_overrides(doc, env)
    # A file value that an override replaced no longer matters, nor do its ${VARS}.
    overridden = {pointer(loc) for loc in doc.overrides}
    problems += [p for p in doc.problems if not _under(p.pointer, overridden)]
    # A value already found wrong (an unset variable, a bad override) is reported once:
    # the schema and the semantic checks skip it, and the semantic checks skip what the
    # schema already rejected.
    tainted = {pointer(loc) for loc in doc.tainted}
    schema_problems = [p for p in validate(doc) if not _under(p.pointer, tainted)]
    rejected = {p.pointer for p in schema_problems}
    problems += schema_problems
    problems += [
        p
        for p in check_semantics(doc)
        if p.pointer not in rejected and not _under(p.pointer, tainted)
    ]
    errors = [p for p in problems if p.level == "error"]
    if errors:
        raise ConfigError(errors)
    config = _build(doc, env)
    warnings = [p for p in problems if p.level == "warning"]
    warnings += _disabled_warnings(doc, config)
    return _with_warnings(config, warnings)


def _under(ptr: str, pointers: set[str]) -> bool:
    return any(ptr == t or (t != "/" and ptr.startswith(t + "/")) for t in pointers)


def _with_warnings(config: Config, warnings: list[Problem]) -> Config:
    return Config(
        path=config.path,
        server=config.server,
        providers=config.providers,
        routes=config.routes,
        environment=config.environment,
        warnings=tuple(sorted(warnings)),
        state=config.state,
        cache=config.cache,
    )


# Building the frozen config ------------------------------------------------------------------


def _section(cls: type[Any], base: Any, *overrides: Any) -> Any:
    values = dict(vars(base))
    for spec in overrides:
        values.update({k: v for k, v in mapping(spec).items() if v is not None})
    return cls(**values)


def _split_keys(value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else (value or [])
    return tuple(k.strip() for k in items if isinstance(k, str) and k.strip())


def _auth(value: Any) -> Auth:
    if isinstance(value, str):
        return Auth(style=value)  # type: ignore[arg-type]
    spec = mapping(value)
    style = spec.get("style", "bearer")
    if style == "header":
        return Auth("header", spec["header"], spec.get("prefix", ""))
    if style == "query":
        return Auth("query", spec["param"])
    return Auth(style=style)


def _build(doc: Document, env: Mapping[str, str]) -> Config:
    data = mapping(doc.data)
    defaults = mapping(data.get("defaults"))
    timeouts = _section(Timeouts, Timeouts(), defaults.get("timeouts"))
    pool = _section(Pool, Pool(), defaults.get("pool"))
    retry = _section(Retry, Retry(), defaults.get("retry"))
    cooldown = _section(Cooldown, Cooldown(), defaults.get("cooldown"))
    health = _section(Health, Health(), defaults.get("health"))

    providers: dict[str, Provider] = {}
    for name, raw in mapping(data.get("providers")).items():
        spec = mapping(raw)
        builtin = spec.get("builtin")
        # A builtin provider has no credentials to send: auth none, whatever the default.
        auth = Auth("none") if builtin else _auth(spec.get("auth", "bearer"))
        keys = _split_keys(spec.get("keys"))
        url = str(spec.get("base_url") or "").strip()
        providers[name] = Provider(
            name=name,
            base_url=url.rstrip("/"),
            auth=auth,
            keys=keys,
            headers=tuple(mapping(spec.get("headers")).items()),
            query=tuple(mapping(spec.get("query")).items()),
            stream_usage=spec.get("stream_usage", True) is not False,
            timeouts=_section(Timeouts, timeouts, spec.get("timeouts")),
            pool=_section(Pool, pool, spec.get("pool")),
            retry=_section(Retry, retry, spec.get("retry")),
            cooldown=_section(Cooldown, cooldown, spec.get("cooldown")),
            health=_section(Health, health, spec.get("health")),
            models=tuple(spec.get("models") or ()),
            disabled_reason=None if builtin else _disabled_reason(doc, name, url, auth, keys),
            builtin=builtin,
            format=spec.get("format"),
            drop_unsupported=bool(spec.get("drop_unsupported", False)),
            default_max_tokens=int(spec.get("default_max_tokens", 4096)),
            limits=_section(Limits, Limits(), spec.get("limits")),
        )

    routes = mapping(data.get("routes"))
    aliases: dict[str, tuple[Target, ...]] = {}
    strategies: dict[str, Strategy] = {}
    for alias, raw_target in mapping(routes.get("aliases")).items():
        aliases[alias], strategy = _targets(raw_target)
        if strategy != "fallback":
            strategies[alias] = strategy
    server = _server(mapping(data.get("server")))
    # Only the variables that were actually set (an override's own name always is).
    environment = {
        pointer(loc): used
        for loc, names in sorted(doc.env_vars.items(), key=str)
        if (used := tuple(n for n in names if env.get(n)))
    }
    return Config(
        path=doc.file,
        server=server,
        providers=MappingProxyType(providers),
        routes=Routes(
            aliases=MappingProxyType(aliases),
            prefixes=MappingProxyType(dict(mapping(routes.get("prefixes")))),
            strategies=MappingProxyType(strategies),
            default=routes.get("default"),
        ),
        environment=MappingProxyType(environment),
        state=State(redis=str(mapping(data.get("state")).get("redis") or "").strip()),
        cache=_section(Cache, Cache(), data.get("cache")),
    )


def _targets(raw: Any) -> tuple[tuple[Target, ...], Strategy]:
    """An alias's targets with their weights, and its strategy."""
    strategy: Strategy = "fallback"
    items = raw if isinstance(raw, list) else [raw]
    if isinstance(raw, dict):
        strategy = raw.get("strategy", "fallback")
        items = raw["targets"]
    targets = []
    for item in items:
        text, weight = (
            (item["target"], item.get("weight", 1)) if isinstance(item, dict) else (item, 1)
        )
        provider, model = text.split(":", 1)
        targets.append(Target(provider, model, float(weight)))
    return tuple(targets), strategy


def _server(spec: dict[str, Any]) -> Server:
    auth = mapping(spec.get("auth"))
    plain = {k: v for k, v in spec.items() if k not in ("auth", "allowed_origins", "allowed_hosts")}
    server: Server = _section(
        Server,
        Server(),
        plain,
        {
            "auth": GatewayAuth(
                keys=_gateway_keys(auth.get("keys")),
                hmac_secret=str(auth.get("hmac_secret") or ""),
                allow_anonymous=bool(auth.get("allow_anonymous", False)),
            ),
            "allowed_origins": tuple(o.rstrip("/") for o in spec.get("allowed_origins") or ()),
            "allowed_hosts": tuple(h.lower() for h in spec.get("allowed_hosts") or ()),
        },
    )
    return server


def _gateway_keys(value: Any) -> tuple[GatewayKey, ...]:
    items = value.split(",") if isinstance(value, str) else (value or [])
    keys: list[GatewayKey] = []
    for item in items:
        if isinstance(item, str) and item.strip():
            keys.append(GatewayKey(f"key-{len(keys) + 1}", item.strip()))
        elif isinstance(item, dict) and str(item.get("key") or "").strip():
            limits = _section(Limits, Limits(), item.get("limits"))
            keys.append(GatewayKey(str(item["name"]), str(item["key"]).strip(), limits))
    return tuple(keys)


def _variables_hint(doc: Document, location: Location) -> str:
    names = doc.env_vars.get(location, ())
    if not names:
        return ""
    return " (set " + " or ".join(names) + ")"


def _disabled_reason(
    doc: Document, name: str, url: str, auth: Auth, keys: tuple[str, ...]
) -> str | None:
    base: Location = ("providers", name)
    missing = []
    if not url:
        missing.append(f"no base_url{_variables_hint(doc, (*base, 'base_url'))}")
    if auth.needs_key and not keys:
        missing.append(f"no keys{_variables_hint(doc, (*base, 'keys'))}")
    return f"provider `{name}` has " + " and ".join(missing) if missing else None


def _disabled_warnings(doc: Document, config: Config) -> list[Problem]:
    warnings = []
    for name, provider in config.providers.items():
        if provider.disabled_reason:
            field_name = "base_url" if not provider.base_url else "keys"
            warnings.append(
                doc.problem(
                    ("providers", name, field_name),
                    f"{provider.disabled_reason}; requests routed to it get 503",
                    level="warning",
                    origin=False,
                    key=True,
                )
            )
    return warnings
