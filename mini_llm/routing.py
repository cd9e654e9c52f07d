"""compile_routes(config) -> RoutingTable (immutable); resolve(model) -> Route."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from .config import Config, Provider, Strategy, Target
from .suggest import nearest
from .upstream import Upstream

Rule = Literal["alias", "explicit", "prefix", "default"]


@dataclass(frozen=True)
class Route:
    """How one model name resolved: the rule, what it matched, and the targets in order."""

    model: str
    rule: Rule
    matched: str
    targets: tuple[Target, ...]
    strategy: Strategy = "fallback"

    @property
    def label(self) -> str:
        """The rule in a few words, bounded by the table: the alias, `prefix:<prefix>`,
        `explicit` or `default` (the `route` of metrics and of JSON access lines)."""
        if self.rule == "alias":
            return self.matched
        if self.rule == "prefix":
            return "prefix:" + self.matched
        return self.rule

    def describe(self) -> str:
        if self.rule == "alias" and self.strategy != "fallback":
            return f"{self.strategy} alias `{self.matched}`"
        if self.rule == "alias":
            kind = "fallback chain" if len(self.targets) > 1 else "alias"
            return f"{kind} `{self.matched}`"
        if self.rule == "explicit":
            return f"explicit provider `{self.matched}:`"
        if self.rule == "prefix":
            return f"prefix `{self.matched}`"
        return f"default provider `{self.matched}`"


class ModelNotFound(LookupError):
    """No rule matches the model; ``suggestions`` are the nearest aliases."""

    def __init__(self, model: str, suggestions: list[str]) -> None:
        self.model = model
        self.suggestions = suggestions
        hint = f"; did you mean {', '.join(repr(s) for s in suggestions)}?" if suggestions else ""
        super().__init__(f"model {model!r} is not routed by this gateway{hint}")


class RoutingTable:
    """The compiled, immutable routing table: an exact-match dict plus a longest-prefix list."""

    __slots__ = (
        "_alias_routes",
        "_aliases",
        "_default",
        "_prefixes",
        "config",
        "providers",
        "upstreams",
    )

    def __init__(self, config: Config) -> None:
        self.config = config
        self.providers: Mapping[str, Provider] = config.providers
        # Request shaping is compiled here too, so a swap of the table swaps it atomically.
        self.upstreams: Mapping[str, Upstream] = {
            name: Upstream(p) for name, p in config.providers.items()
        }
        self._aliases = dict(config.routes.aliases)
        # The common case, an alias, costs one dict lookup and no allocation.
        self._alias_routes = {
            name: Route(
                name, "alias", name, targets, config.routes.strategies.get(name, "fallback")
            )
            for name, targets in self._aliases.items()
        }
        self._prefixes = sorted(config.routes.prefixes.items(), key=lambda kv: -len(kv[0]))
        self._default = config.routes.default

    @property
    def aliases(self) -> Mapping[str, tuple[Target, ...]]:
        return self._aliases

    def resolve(self, model: str) -> Route:
        """Resolve a model name by the rules the README lists; ModelNotFound when none matches."""
        route = self._alias_routes.get(model)
        if route is not None:
            return route
        provider, sep, upstream = model.partition(":")
        if sep and upstream and provider in self.providers:
            return Route(model, "explicit", provider, (Target(provider, upstream),))
        for prefix, name in self._prefixes:
            if model.startswith(prefix):
                return Route(model, "prefix", prefix, (Target(name, model),))
        if self._default is not None:
            return Route(model, "default", self._default, (Target(self._default, model),))
        raise ModelNotFound(model, self.nearest_aliases(model))

    def nearest_aliases(self, model: str, n: int = 3) -> list[str]:
        return nearest(model, self._aliases, n=n, cutoff=0.4)


def compile_routes(config: Config) -> RoutingTable:
    return RoutingTable(config)
