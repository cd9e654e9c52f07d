"""Read the YAML routing table with line/column marks and interpolate ${VARS}."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# A location in the document: mapping keys are str, sequence indexes int.
Location = tuple[str | int, ...]

_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with a routing table, located at the YAML node that caused it."""

    file: str
    line: int
    col: int
    message: str
    pointer: str = ""
    level: str = "error"

    def __str__(self) -> str:
        where = f" (at {self.pointer})" if self.pointer else ""
        level = "warning: " if self.level == "warning" else ""
        return f"{self.file}:{self.line}:{self.col}: {level}{self.message}{where}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "col": self.col,
            "level": self.level,
            "message": self.message,
            "pointer": self.pointer,
        }


class ConfigError(Exception):
    """The routing table cannot be used; ``problems`` says every reason, sorted."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def pointer(location: Location) -> str:
    """JSON pointer (RFC 6901) of a location."""
    if not location:
        return "/"
    parts = (str(p).replace("~", "~0").replace("/", "~1") for p in location)
    return "/" + "/".join(parts)


@dataclass
class Document:
    """The parsed file as plain data, plus where each value came from."""

    file: str
    data: Any
    marks: dict[Location, tuple[int, int]] = field(default_factory=dict)
    key_marks: dict[Location, tuple[int, int]] = field(default_factory=dict)
    # Location -> environment variables whose values made it (interpolation or override).
    env_vars: dict[Location, tuple[str, ...]] = field(default_factory=dict)
    # Location -> the MINI_LLM_* variable that replaced the file's value.
    overrides: dict[Location, str] = field(default_factory=dict)

    def mark(self, location: Location, *, key: bool = False) -> tuple[int, int]:
        """Line and column of a location, or of its nearest ancestor that has one."""
        if key and location in self.key_marks:
            return self.key_marks[location]
        if location in self.marks:
            return self.marks[location]
        # Something missing below an existing node: point at that node's key.
        loc = location[:-1]
        while loc:
            found = self.key_marks.get(loc) or self.marks.get(loc)
            if found:
                return found
            loc = loc[:-1]
        return self.marks.get((), (1, 1))

    def problem(
        self,
        location: Location,
        message: str,
        *,
        key: bool = False,
        level: str = "error",
        origin: bool = True,
    ) -> Problem:
        line, col = self.mark(location, key=key)
        source = self._origin(location) if origin else ""
        if source:
            message = f"{message} ({source})"
        return Problem(self.file, line, col, message, pointer(location), level)

    def _origin(self, location: Location) -> str:
        loc = location
        while loc:
            if loc in self.overrides:
                return f"set by {self.overrides[loc]}"
            loc = loc[:-1]
        names = self.env_vars.get(location)
        return "value from ${" + "}, ${".join(names) + "}" if names else ""


def read_document(path: Path, env: Mapping[str, str], display: str | None = None) -> Document:
    """Read, compose and interpolate a YAML file; raise ConfigError on any problem."""
    name = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([Problem(name, 1, 1, "file not found")]) from None
    except IsADirectoryError:
        raise ConfigError([Problem(name, 1, 1, "is a directory, not a file")]) from None
    except PermissionError:
        raise ConfigError([Problem(name, 1, 1, "permission denied")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([Problem(name, 1, 1, f"not UTF-8 text ({exc.reason})")]) from None
    except OSError as exc:
        raise ConfigError([Problem(name, 1, 1, f"cannot read: {exc.strerror}")]) from None
    return parse_document(text, name, env)


def parse_document(text: str, name: str, env: Mapping[str, str]) -> Document:
    """Compose YAML text into an interpolated Document; duplicate keys are errors."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        raise ConfigError([Problem(name, line, col, f"YAML syntax error: {message}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(name, 1, 1, f"YAML error: {exc}")]) from None
    if node is None:
        raise ConfigError([Problem(name, 1, 1, "the file is empty; expected a mapping")])
    doc = Document(name, None)
    problems: list[Problem] = []
    doc.data = _Composer(doc, problems, env).convert(node, ())
    if problems:
        raise ConfigError(problems)
    return doc


class _Composer:
    """Turns composed YAML nodes into plain data, recording marks as it goes."""

    def __init__(self, doc: Document, problems: list[Problem], env: Mapping[str, str]) -> None:
        self.doc = doc
        self.problems = problems
        self.env = env
        self.constructor = yaml.constructor.SafeConstructor()

    def convert(self, node: yaml.Node, location: Location) -> Any:
        self.doc.marks.setdefault(location, (node.start_mark.line + 1, node.start_mark.column + 1))
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, location)
        if isinstance(node, yaml.SequenceNode):
            return [self.convert(item, (*location, i)) for i, item in enumerate(node.value)]
        if node.tag == _STR_TAG and "$" in node.value:
            return self._interpolate(node, location)
        try:
            return self.constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            self.problems.append(self.doc.problem(location, f"invalid value: {exc}"))
            return None

    def _interpolate(self, node: yaml.ScalarNode, location: Location) -> Any:
        try:
            result = expand(node.value, self.env)
        except InterpolationError as exc:
            self.problems.append(self.doc.problem(location, str(exc)))
            return node.value
        if result.used:
            self.doc.env_vars[location] = tuple(result.used)
        if result.missing and not _may_be_empty(location):
            for name in result.missing:
                self.problems.append(
                    self.doc.problem(
                        location,
                        f"environment variable `{name}` is not set and has no default",
                        origin=False,
                    )
                )
        if node.style is None and _may_retype(location):
            return retype(result.text)
        return result.text

    def _mapping(self, node: yaml.MappingNode, location: Location) -> dict[str, Any]:
        result: dict[str, Any] = {}
        first_seen: dict[str, int] = {}
        merged: list[dict[str, Any]] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                value = self.convert(value_node, location)
                sources = value if isinstance(value, list) else [value]
                merged.extend(s for s in sources if isinstance(s, dict))
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                line, col = key_node.start_mark.line + 1, key_node.start_mark.column + 1
                self.problems.append(
                    Problem(
                        self.doc.file,
                        line,
                        col,
                        "mapping keys must be plain names",
                        pointer(location),
                    )
                )
                continue
            key = str(key_node.value)
            child = (*location, key)
            key_mark = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if key in first_seen:
                self.problems.append(
                    Problem(
                        self.doc.file,
                        *key_mark,
                        f"duplicate key `{key}` (first defined on line {first_seen[key]})",
                        pointer(child),
                    )
                )
                continue
            first_seen[key] = key_mark[0]
            self.doc.key_marks[child] = key_mark
            result[key] = self.convert(value_node, child)
        for source in reversed(merged):
            for key, value in source.items():
                result.setdefault(key, value)
        return result


def _may_be_empty(location: Location) -> bool:
    # An unset variable that only empties a provider's base_url or keys disables the provider.
    return len(location) >= 3 and location[0] == "providers" and location[2] in ("base_url", "keys")


_TYPED_SECTIONS = frozenset({"timeouts", "pool", "retry", "cooldown"})


def _may_retype(location: Location) -> bool:
    # Numbers and booleans live only in these sections; names, URLs and keys stay text.
    if not location:
        return False
    if location[0] in ("version", "server", "defaults"):
        return True
    return len(location) >= 3 and location[0] == "providers" and location[2] in _TYPED_SECTIONS


# Interpolation -----------------------------------------------------------------------------


class InterpolationError(ValueError):
    """A ${...} expression that cannot be expanded."""


@dataclass
class Expansion:
    """The result of expanding one string."""

    text: str
    used: list[str] = field(default_factory=list)  # every variable the string refers to
    missing: list[str] = field(default_factory=list)  # referenced, unset, without default


def expand(text: str, env: Mapping[str, str]) -> Expansion:
    """Expand ``${VAR}``, ``${VAR:-default}`` (defaults nest) and ``$$`` in text."""
    result = Expansion("")
    result.text, _ = _expand(text, 0, env, result, nested=False)
    return result


def _expand(
    text: str, pos: int, env: Mapping[str, str], out: Expansion, *, nested: bool
) -> tuple[str, int]:
    parts: list[str] = []
    n = len(text)
    while pos < n:
        ch = text[pos]
        if nested and ch == "}":
            return "".join(parts), pos
        if ch != "$" or pos + 1 >= n:
            parts.append(ch)
            pos += 1
            continue
        nxt = text[pos + 1]
        if nxt == "$":
            parts.append("$")
            pos += 2
            continue
        if nxt != "{":
            parts.append(ch)
            pos += 1
            continue
        match = _VAR_NAME.match(text, pos + 2)
        if not match:
            raise InterpolationError(
                f"`${{` at character {pos + 1} must be followed by a variable name"
            )
        name = match.group()
        pos = match.end()
        if name not in out.used:
            out.used.append(name)
        value = env.get(name)
        if text.startswith(":-", pos):
            default, pos = _expand(text, pos + 2, env, out, nested=True)
            if pos >= n:
                raise InterpolationError(f"`${{{name}:-` is not closed with `}}`")
            parts.append(value if value else default)
        elif pos < n and text[pos] == "}":
            if value is None:
                out.missing.append(name)
            parts.append(value or "")
        else:
            raise InterpolationError(
                f"`${{{name}` must be closed with `}}` or continue with `:-default}}`"
            )
        pos += 1
    if nested:
        raise InterpolationError("`${` is not closed with `}`")
    return "".join(parts), pos


def retype(text: str) -> Any:
    """Type an interpolated plain scalar as YAML would have typed the same literal text."""
    resolver: Any = yaml.resolver.Resolver()
    tag = resolver.resolve(yaml.ScalarNode, text, (True, False))
    if tag == _STR_TAG:
        return text
    node = yaml.ScalarNode(tag, text)
    try:
        return yaml.constructor.SafeConstructor().construct_object(node)
    except yaml.YAMLError:
        return text
