"""${VAR}, ${VAR:-default} and $$ in the table's strings, and typing what they expand to."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
STR_TAG = "tag:yaml.org,2002:str"


class InterpolationError(ValueError):
    """A ${...} expression that cannot be expanded."""


@dataclass
class Expansion:
    """The result of expanding one string."""

    text: str
    used: list[str] = field(default_factory=list)  # every variable the string refers to
    missing: list[str] = field(default_factory=list)  # referenced, unset, without default


def expand(text: str, env: Mapping[str, str], *, hole: str = "") -> Expansion:
    """Expand ``${VAR}``, ``${VAR:-default}`` (defaults nest) and ``$$`` in text.

    An unset ``${VAR}`` without default expands to ``hole``. A default is expanded (and
    its variables count as used or missing) only when it is taken.
    """
    result = Expansion("")
    result.text, _ = _expand(text, 0, env, result, hole, nested=False)
    return result


def _expand(
    text: str, pos: int, env: Mapping[str, str], out: Expansion, hole: str, *, nested: bool
) -> tuple[str, int]:
    """Expand from pos to the end, or (nested) to the next unmatched ``}``."""
    parts: list[str] = []
    n = len(text)
    while pos < n:
        ch = text[pos]
        if nested and ch == "}":
            return "".join(parts), pos
        if ch != "$" or pos + 1 >= n or text[pos + 1] not in "${":
            parts.append(ch)
            pos += 1
            continue
        if text[pos + 1] == "$":
            parts.append("$")
            pos += 2
            continue
        match = _VAR_NAME.match(text, pos + 2)
        if not match:
            shown = text[pos : pos + 12] + ("…" if pos + 12 < n else "")
            raise InterpolationError(
                f"`{shown}`: `${{` must be followed by a variable name (letters, digits, `_`);"
                " write `$$` for a literal `$`"
            )
        name = match.group()
        pos = match.end()
        if name not in out.used:
            out.used.append(name)
        value = env.get(name)
        if text.startswith(":-", pos):
            scratch = Expansion("")
            default, pos = _expand(text, pos + 2, env, scratch, hole, nested=True)
            if pos >= n:
                raise InterpolationError(f"`${{{name}:-` is not closed with `}}`")
            if value:
                parts.append(value)
            else:
                parts.append(default)
                out.used.extend(v for v in scratch.used if v not in out.used)
                out.missing.extend(v for v in scratch.missing if v not in out.missing)
        elif pos < n and text[pos] == "}":
            if value is None:
                if name not in out.missing:
                    out.missing.append(name)
                parts.append(hole)
            else:
                parts.append(value)
        else:
            raise InterpolationError(
                f"`${{{name}` must be closed with `}}` or continue with `:-default}}`"
            )
        pos += 1
    return "".join(parts), pos


def retype(text: str) -> Any:
    """Type an interpolated plain scalar as YAML would have typed the same literal text."""
    resolver: Any = yaml.resolver.Resolver()
    tag = resolver.resolve(yaml.ScalarNode, text, (True, False))
    if tag == STR_TAG:
        return text
    node = yaml.ScalarNode(tag, text)
    try:
        return yaml.constructor.SafeConstructor().construct_object(node)
    except yaml.YAMLError:
        return text
