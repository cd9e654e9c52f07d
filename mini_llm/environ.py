"""Apply MINI_LLM_* environment overrides to a parsed routing table."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

import yaml

from .contract import PARENT_PID_VARIABLE, WORKER_VARIABLE
from .source import Document, Location, Problem, is_typed
from .suggest import nearest

PREFIX = "MINI_LLM__"

# Variables mini-llm reads that are not config overrides.
OTHER_VARIABLES = frozenset({"MINI_LLM_CONFIG", PARENT_PID_VARIABLE, WORKER_VARIABLE})

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


_DIGITS = re.compile(r"\s*[0-9]+\s*")


def _count(text: str) -> int:
    # Not int(text) alone: it also takes "1_000", "+5" and non-ASCII digits.
    if not _DIGITS.fullmatch(text):
        raise ValueError
    return int(text)


def _port(text: str) -> int:
    value = _count(text)
    if value > 65535:
        raise ValueError
    return value


def _flag(text: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError


def _host(text: str) -> str:
    if not text.strip():
        raise ValueError
    return text.strip()


_NAMED: dict[str, tuple[Location, Callable[[str], Any], str]] = {
    "MINI_LLM_HOST": (("server", "host"), _host, "a host name or address"),
    "MINI_LLM_PORT": (("server", "port"), _port, "a port number 0-65535"),
    "MINI_LLM_PORT_RETRIES": (("server", "port_retries"), _count, "a whole number >= 0"),
    "MINI_LLM_LOG_REQUESTS": (("server", "log_requests"), _flag, "true/false, 1/0, yes/no, on/off"),
}
ALIASES_VARIABLE = "MINI_LLM_MODEL_ALIASES"
KNOWN_VARIABLES = frozenset({*_NAMED, ALIASES_VARIABLE, *OTHER_VARIABLES})


def apply_overrides(doc: Document, env: Mapping[str, str]) -> list[Problem]:
    """Apply overrides in place, lowest precedence first; return problems and warnings."""
    problems: list[Problem] = []
    if not isinstance(doc.data, dict):
        return problems
    for name, (location, parse, expected) in _NAMED.items():
        if name in env:
            try:
                value = parse(env[name])
            except ValueError:
                problems.append(
                    doc.problem(location, f"{name}={env[name]!r} is not {expected}", origin=False)
                )
                continue
            _set(doc, location, value, name, problems)
    if ALIASES_VARIABLE in env:
        _apply_aliases(doc, env[ALIASES_VARIABLE], problems)
    for name in sorted(env):
        if name.startswith(PREFIX):
            _apply_path_override(doc, name, env[name], problems)
        elif name.startswith("MINI_LLM_") and name not in KNOWN_VARIABLES:
            hint = nearest(name, sorted(KNOWN_VARIABLES))
            suggestion = f"; did you mean `{hint[0]}`?" if hint else ""
            problems.append(
                doc.problem(
                    (),
                    f"unknown variable `{name}` is ignored{suggestion}",
                    level="warning",
                    origin=False,
                )
            )
    return problems


def _apply_aliases(doc: Document, text: str, problems: list[Problem]) -> None:
    location: Location = ("routes", "aliases")
    try:
        aliases = json.loads(text)
    except json.JSONDecodeError as exc:
        problems.append(
            doc.problem(
                location, f"{ALIASES_VARIABLE} is not valid JSON: {exc.msg}", origin=False, key=True
            )
        )
        return
    if not isinstance(aliases, dict):
        problems.append(
            doc.problem(
                location,
                f'{ALIASES_VARIABLE} must be a JSON object of alias -> "provider:model"',
                origin=False,
                key=True,
            )
        )
        return
    for alias, target in aliases.items():
        _set(doc, (*location, alias), target, ALIASES_VARIABLE, problems)


def _apply_path_override(doc: Document, name: str, text: str, problems: list[Problem]) -> None:
    segments = name[len(PREFIX) :].split("__")
    if not all(segments):
        problems.append(
            doc.problem((), f"{name}: empty path segment (use `__` between names)", origin=False)
        )
        return
    location: Location = tuple(s.lower() for s in segments)
    if not text.strip():
        value: Any = ""
    else:
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            reason = getattr(exc, "problem", None) or "invalid YAML"
            problems.append(
                doc.problem(location, f"{name} is not a valid value: {reason}", origin=False)
            )
            return
        # A URL, key, header or model that happens to look like a number or a date
        # (`KEYS=123456`, `API-VERSION=2024-06-01`) stays text where only text is valid.
        if not is_typed(location) and not isinstance(value, (str, list, dict, type(None))):
            value = text.strip()
    _set(doc, location, value, name, problems)


def _set(doc: Document, location: Location, value: Any, name: str, problems: list[Problem]) -> None:
    node = doc.data
    for i, segment in enumerate(location[:-1]):
        child = node.get(segment) if isinstance(node, dict) else None
        if child is None:
            child = {}
            node[segment] = child
        elif not isinstance(child, dict):
            where = location[: i + 1]
            problems.append(
                doc.problem(
                    where, f"{name} sets a key inside a value that is not a mapping", origin=False
                )
            )
            return
        node = child
    node[location[-1]] = value
    # Whatever the file (or a weaker override) had at and below this point is gone.
    for record in (doc.env_vars, doc.overrides):
        for stale in [loc for loc in record if loc[: len(location)] == location]:
            del record[stale]
    doc.tainted = {loc for loc in doc.tainted if loc[: len(location)] != location}
    doc.overrides[location] = name
    doc.env_vars[location] = (name,)
