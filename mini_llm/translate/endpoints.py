"""Which endpoints translate, where they go upstream, and the headers a translated request needs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from .base import Format

DROPPED_HEADER = "x-mini-llm-dropped"
ANTHROPIC_VERSION = "2023-06-01"

# The one pair of endpoints that has a counterpart in the other format.
_COUNTERPART: Mapping[str, str] = MappingProxyType(
    {"/chat/completions": "/messages", "/messages": "/chat/completions"}
)


def path_format(path: str) -> Format:
    """The format a client speaks on ``path`` (``/v1/messages*`` is Anthropic's)."""
    api = path.removeprefix("/v1")
    return "anthropic" if api == "/messages" or api.startswith("/messages/") else "openai"


def translated_path(path: str, *, to: Format) -> str | None:
    """The upstream path for a request on ``path`` sent to a provider of format ``to``.

    ``path`` may carry the ``/v1`` prefix or not (the result keeps it as given) and no query
    string. The same format gives ``path`` back unchanged; None means the endpoint has no
    counterpart in ``to``: the caller answers 400 ``unsupported_for_provider``.
    """
    if path_format(path) == to:
        return path
    prefix = "/v1" if path.startswith("/v1/") else ""
    counterpart = _COUNTERPART.get(path.removeprefix(prefix).rstrip("/"))
    return None if counterpart is None else prefix + counterpart


def needs_translation(path: str, provider_format: Format | None) -> bool:
    """Whether a request on ``path`` must be translated for a provider (None: never)."""
    return provider_format is not None and path_format(path) != provider_format


def is_translatable(path: str, *, to: Format) -> bool:
    return translated_path(path, to=to) is not None


@dataclass(frozen=True)
class HeaderChanges:
    """Request headers to adjust when a request goes upstream translated.

    ``replace`` wins over what the client sent; ``default`` is added only when neither the
    client nor the provider's ``headers`` set it; ``remove`` names headers that belong to
    the client's format only. The answer is read to be rewritten, so it must arrive
    uncompressed: hence ``accept-encoding: identity``.
    """

    replace: Mapping[str, str] = field(default_factory=dict)
    default: Mapping[str, str] = field(default_factory=dict)
    remove: frozenset[str] = frozenset()


_HEADERS: Mapping[Format, HeaderChanges] = MappingProxyType(
    {
        "anthropic": HeaderChanges(
            replace=MappingProxyType({"accept-encoding": "identity"}),
            default=MappingProxyType({"anthropic-version": ANTHROPIC_VERSION}),
            remove=frozenset({"openai-organization", "openai-project", "openai-beta"}),
        ),
        "openai": HeaderChanges(
            replace=MappingProxyType({"accept-encoding": "identity"}),
            remove=frozenset({"anthropic-version", "anthropic-beta"}),
        ),
    }
)

# Upstream answer headers that no longer describe the translated body.
RESPONSE_HEADERS_TO_DROP = frozenset({"content-length", "content-encoding", "content-type"})


def request_headers(to: Format) -> HeaderChanges:
    """How to adjust the upstream request's headers for a provider of format ``to``."""
    return _HEADERS[to]


def content_type(stream: bool) -> str:
    """The Content-Type of a translated answer."""
    return "text/event-stream; charset=utf-8" if stream else "application/json"
