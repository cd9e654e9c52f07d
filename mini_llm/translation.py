"""A request crossing formats for one target: what `send` sends, what `relay` reads back.

Built once per target in `Call.tries` (proxy.py) only when the provider speaks the other
format; the translation itself lives in the pure `translate` package.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .config import Provider
from .errors import ProxyError
from .translate import (
    Format,
    StreamTranslator,
    TranslationError,
    path_format,
    request_headers,
    stream_translator,
    translate_request,
    translated_path,
)


@dataclass(frozen=True)
class Translation:
    """One target's translated request and how its answer goes back to the client."""

    client: Format  # the format the client speaks, and gets its answer in
    provider: Format
    tail: str  # the upstream path after /v1
    body: bytes
    dropped: tuple[str, ...]
    client_doc: dict[str, Any]  # the client's request, for the answer's model and stream

    @property
    def client_model(self) -> str:
        model = self.client_doc.get("model")
        return model if isinstance(model, str) else ""

    def headers(self, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """The upstream request's headers adjusted for the provider's format."""
        changes = request_headers(self.provider)
        gone = changes.remove | {name.lower() for name in changes.replace}
        out = [(n, v) for n, v in headers if n.lower() not in gone]
        present = {n.lower() for n, _ in out}
        out.extend(changes.replace.items())
        out.extend((n, v) for n, v in changes.default.items() if n.lower() not in present)
        return out

    def stream(self) -> StreamTranslator:
        return stream_translator(self.client_doc, to=self.client)


def translation_for(path: str, doc: dict[str, Any], provider: Provider, model: str) -> Translation:
    """The request for a provider of the other format; 400 in the client's shape if it cannot be.

    ``model`` is the target's upstream model name.
    """
    to = provider.format
    assert to is not None, "only providers that declare a format translate"
    upstream_path = translated_path(path, to=to)
    if upstream_path is None:
        raise ProxyError(
            400,
            "unsupported_for_provider",
            f"{path} has no counterpart in the {to} format that provider "
            f"`{provider.name}` speaks; only chat requests are translated",
        )
    try:
        translated, dropped = translate_request(
            doc,
            to=to,
            default_max_tokens=provider.default_max_tokens,
            drop_unsupported=provider.drop_unsupported,
        )
    except TranslationError as exc:
        raise ProxyError(400, exc.code, str(exc)) from None
    translated["model"] = model
    body = json.dumps(translated, ensure_ascii=False).encode()
    return Translation(path_format(path), to, upstream_path[3:], body, tuple(dropped), doc)
