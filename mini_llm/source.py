"""Read the YAML routing table with line/column marks and interpolate ${VARS}."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .interpolate import STR_TAG, InterpolationError, expand, retype

# A location in the document: mapping keys are str, sequence indexes int.
Location = tuple[str | int, ...]

_MERGE_TAG = "tag:yaml.org,2002:merge"
_HOLE = "\x00"  # stands for an unset variable while deciding whether it only empties a value
_ONE_LINE = str.maketrans({"\n": "\\n", "\r": "\\r", "\t": "\\t"})


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
        text = f"{self.file}:{self.line}:{self.col}: {level}{self.message}{where}"
        # One problem, one line: a key or value with a line break must not split it.
        return text.translate(_ONE_LINE)

    def file_key(self) -> tuple[str, int, int, str, str]:
        return (self.file, self.line, self.col, self.level, self.message)

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
        # A node reached through several YAML aliases reports the same problem once.
        unique: dict[tuple[str, int, int, str, str], Problem] = {}
        for problem in sorted(problems):
            unique.setdefault(problem.file_key(), problem)
        self.problems = list(unique.values())
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
    # Problems found while composing (duplicate keys, ${VARS}); later stages still run.
    problems: list[Problem] = field(default_factory=list)
    # Values known to be wrong already: later stages do not report them a second time.
    tainted: set[Location] = field(default_factory=set)

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
    """Read, compose and interpolate a YAML file.

    Raises ConfigError when the file cannot be read or parsed at all; problems in its
    content (duplicate keys, unset variables) are collected in ``Document.problems``.
    """
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
    """Compose YAML text into an interpolated Document; duplicate keys are problems.

    Raises ConfigError only for text that is not YAML or holds no document.
    """
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([_syntax_problem(exc, text, name)]) from None
    except yaml.reader.ReaderError as exc:  # a control character: a position, not a mark
        before = text[: exc.position]
        line, col = before.count("\n") + 1, exc.position - (before.rfind("\n") + 1) + 1
        problem = f"YAML syntax error: unacceptable character #x{exc.character:04x}: {exc.reason}"
        raise ConfigError([Problem(name, line, col, problem)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(name, 1, 1, f"YAML syntax error: {exc}")]) from None
    if node is None or (isinstance(node, yaml.ScalarNode) and node.value == "" and not node.style):
        # Nothing at all, only comments, or a lone `---`.
        raise ConfigError([Problem(name, 1, 1, "the file is empty; expected a mapping")])
    doc = Document(name, None)
    doc.data = _Composer(doc, env).convert(node, ())
    return doc


def _syntax_problem(exc: yaml.MarkedYAMLError, text: str, name: str) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    message = exc.problem or exc.context or "invalid YAML"
    context = exc.context if exc.problem else None
    if context:
        started = exc.context_mark
        if started is not None and started.line + 1 != line:
            context = f"{context} started on line {started.line + 1}"
        message = f"{message} ({context})"
    if "'\\t'" in message:
        message += "; indent with spaces, not tabs"
    lines = text.splitlines()
    if "flow" in message and 0 < line <= len(lines) and "${" in lines[line - 1]:
        message += '; inside [ ] or { } put a ${...} value in quotes: "${VAR}"'
    return Problem(name, line, col, f"YAML syntax error: {message}")


class _Composer:
    """Turns composed YAML nodes into plain data, recording marks as it goes."""

    def __init__(self, doc: Document, env: Mapping[str, str]) -> None:
        self.doc = doc
        self.problems = doc.problems
        self.env = env
        self.constructor = yaml.constructor.SafeConstructor()
        self.open_nodes: set[int] = set()  # collections being converted: catches `&a [*a]`

    def convert(self, node: yaml.Node, location: Location) -> Any:
        self.doc.marks.setdefault(location, _mark(node))
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, location)
        if id(node) in self.open_nodes:
            self.problems.append(
                self.doc.problem(location, "an alias inside this anchored value refers back to it")
            )
            self.doc.tainted.add(location)
            return None
        self.open_nodes.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, location)
            return [self.convert(item, (*location, i)) for i, item in enumerate(node.value)]
        finally:
            self.open_nodes.discard(id(node))

    def _scalar(self, node: yaml.ScalarNode, location: Location) -> Any:
        if node.tag == STR_TAG and "$" in node.value:
            return self._interpolate(node, location)
        try:
            return self.constructor.construct_object(node, deep=True)
        except Exception as exc:  # an explicit tag on text it cannot read: `!!int many`
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            if isinstance(exc, yaml.YAMLError):
                reason = getattr(exc, "problem", None) or f"`{node.value}` is not a valid {tag}"
            else:
                reason = f"`{node.value}` is not a valid {tag}"
            self.problems.append(self.doc.problem(location, f"invalid value: {reason}"))
            self.doc.tainted.add(location)
            return None

    def _interpolate(self, node: yaml.ScalarNode, location: Location) -> Any:
        try:
            result = expand(node.value, self.env)
        except InterpolationError as exc:
            self.problems.append(self.doc.problem(location, str(exc)))
            self.doc.tainted.add(location)
            return node.value
        if result.used:
            self.doc.env_vars[location] = tuple(result.used)
        if result.missing and not self._only_empties(node.value, location):
            for name in result.missing:
                self.problems.append(
                    self.doc.problem(
                        location,
                        f"environment variable `{name}` is not set and has no default"
                        " (write `${" + name + ":-}` to allow it to be empty)",
                        origin=False,
                    )
                )
            self.doc.tainted.add(location)
        if node.style is None and is_typed(location):
            return retype(result.text)
        return result.text

    def _only_empties(self, text: str, location: Location) -> bool:
        """True when unset variables only empty a provider's base_url or (some of) its keys."""
        if not _may_be_empty(location):
            return False
        holed = expand(text, self.env, hole=_HOLE).text
        # A keys string is split at commas, and an emptied entry is dropped.
        split = location[2] == "keys" and len(location) == 3
        pieces = holed.split(",") if split else [holed]
        return all(not p.replace(_HOLE, "").strip() for p in pieces if _HOLE in p)

    def _mapping(self, node: yaml.MappingNode, location: Location) -> dict[str, Any]:
        result: dict[str, Any] = {}
        first_seen: dict[str, int] = {}
        merges: list[yaml.Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merges.append(value_node)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.problems.append(
                    Problem(
                        self.doc.file,
                        *_mark(key_node),
                        "mapping keys must be plain names",
                        pointer(location),
                    )
                )
                continue
            key = str(key_node.value)
            child = (*location, key)
            key_mark = _mark(key_node)
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
            # setdefault: keys merged in later from `<<: *base` must not move these marks.
            self.doc.key_marks.setdefault(child, key_mark)
            result[key] = self.convert(value_node, child)
        # `<<: *base` (or a list of them; the earlier one wins) fills in the keys not
        # written here. Converted after this mapping's own keys so that their marks win.
        for merge in merges:
            sources = merge.value if isinstance(merge, yaml.SequenceNode) else [merge]
            for source in sources:
                if not isinstance(source, yaml.MappingNode):
                    self.problems.append(
                        Problem(
                            self.doc.file,
                            *_mark(source),
                            "`<<` merges a mapping or a list of mappings",
                            pointer(location),
                        )
                    )
                    continue
                for key, value in self.convert(source, location).items():
                    result.setdefault(key, value)
        return result


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _may_be_empty(location: Location) -> bool:
    # An unset variable that only empties a provider's base_url or keys disables the provider.
    return len(location) >= 3 and location[0] == "providers" and location[2] in ("base_url", "keys")


_TYPED_SECTIONS = frozenset({"timeouts", "pool", "retry", "cooldown", "stream_usage"})


def is_typed(location: Location) -> bool:
    """Numbers and booleans live only in these sections; names, URLs and keys stay text."""
    if not location:
        return False
    if location[0] in ("version", "server", "defaults"):
        return True
    return len(location) >= 3 and location[0] == "providers" and location[2] in _TYPED_SECTIONS
