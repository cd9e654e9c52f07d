"""What every translation shares: the two formats, the 400 for a field, JSON and data URLs."""

from __future__ import annotations

import json
import re
from typing import Any, Literal

Format = Literal["openai", "anthropic"]
FORMATS: tuple[Format, ...] = ("openai", "anthropic")
JSON = dict[str, Any]

_DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+)((?:;[\w-]+=[^;,]*)*);base64,(.*)", re.DOTALL)


class TranslationError(ValueError):
    """A request field the other format cannot carry: the caller answers 400 naming it.

    ``droppable`` errors name a field the provider may drop instead (``drop_unsupported``);
    the others are malformed input that no setting makes translatable.
    """

    def __init__(self, field: str, message: str, *, droppable: bool = True) -> None:
        super().__init__(f"`{field}` {message}")
        self.field = field
        self.message = message
        self.droppable = droppable

    @property
    def code(self) -> str:
        return "unsupported_parameter" if self.droppable else "invalid_request_error"


class Carry:
    """Collects what a translation drops, or refuses it, as the provider's setting says."""

    def __init__(self, to: Format, drop_unsupported: bool) -> None:
        self.to = to
        self.drop = drop_unsupported
        self.dropped: list[str] = []

    def unsupported(self, field: str, why: str = "") -> None:
        target = "Anthropic Messages" if self.to == "anthropic" else "OpenAI Chat Completions"
        reason = why or f"has no counterpart in the {target} API"
        if not self.drop:
            raise TranslationError(
                field,
                f"{reason}; this provider speaks the {self.to} format "
                "(set drop_unsupported: true on the provider to drop such fields)",
            )
        self.dropped.append(field)


def malformed(field: str, message: str) -> TranslationError:
    return TranslationError(field, message, droppable=False)


def as_dict(value: Any, field: str) -> JSON:
    if not isinstance(value, dict):
        raise malformed(field, "must be an object")
    return value


def as_list(value: Any, field: str) -> list[Any]:
    if not isinstance(value, list):
        raise malformed(field, "must be an array")
    return value


def as_str(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise malformed(field, "must be a string")
    return value


# Made once: json.dumps with options builds a new encoder on every call.
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def dumps(doc: Any) -> str:
    """Compact JSON, as both providers write it."""
    return _COMPACT.encode(doc)


def as_int(value: Any) -> int:
    """A token count from an answer; anything else counts as 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def parse_data_url(url: str) -> tuple[str, str] | None:
    """``data:MEDIA;base64,DATA`` -> (media type, base64 data); None for anything else."""
    match = _DATA_URL.fullmatch(url)
    return (match.group(1), match.group(3)) if match else None


def data_url(media_type: str, data: str) -> str:
    return f"data:{media_type};base64,{data}"


def obj(value: Any) -> JSON:
    """``value`` when it is an object, else an empty one (for reading answers leniently)."""
    return value if isinstance(value, dict) else {}
