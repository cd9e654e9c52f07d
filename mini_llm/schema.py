"""Validate a routing table against schemas/mini-llm.schema.json, problems as FILE:LINE:COL."""

from __future__ import annotations

import json
from datetime import date, datetime
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError

from .source import Document, Location, Problem
from .suggest import nearest

SCHEMA_NAME = "mini-llm.schema.json"

# Values at these places may be secrets: never echo them in a message.
_SECRET_FIELDS = frozenset({"keys", "headers", "query"})

_JSON_TYPES = {
    dict: "a mapping",
    list: "a list",
    str: "a string",
    bool: "true/false",
    int: "an integer",
    float: "a number",
    type(None): "null",
}
_SCHEMA_TYPES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "boolean": "true/false",
    "integer": "an integer",
    "number": "a number",
    "null": "null",
}


def schema_path() -> Path:
    """Where the schema is: inside the installed package, else the checkout's schemas/."""
    packaged = resources.files("mini_llm") / "_data" / SCHEMA_NAME
    if packaged.is_file():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / "schemas" / SCHEMA_NAME


@cache
def _validator() -> jsonschema.protocols.Validator:
    schema = json.loads(schema_path().read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    validator: jsonschema.protocols.Validator = cls(schema)
    return validator


def validate(doc: Document) -> list[Problem]:
    """Every schema violation in the document, one problem each, located at its node."""
    problems: list[Problem] = []
    for error in _validator().iter_errors(doc.data):
        problems.extend(_explain(error, doc))
    return problems


def _describe(value: Any) -> str:
    if isinstance(value, (date, datetime)):
        return "a date"
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _secret(location: Location) -> bool:
    return any(part in _SECRET_FIELDS for part in location if isinstance(part, str))


def _suggest(word: str, choices: list[str]) -> str:
    close = nearest(word, choices)
    return f"; did you mean `{close[0]}`?" if close else ""


def _branch_types(schema: dict[str, Any], root: dict[str, Any]) -> list[str]:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = root["$defs"][name]
    kind = schema.get("type")
    if kind is None and "const" in schema:
        kind = type(schema["const"]).__name__
    if isinstance(kind, list):
        return kind
    return [kind] if isinstance(kind, str) else []


def _type_matches(value: Any, kind: str) -> bool:
    checker = jsonschema.Draft202012Validator.TYPE_CHECKER
    return kind in _SCHEMA_TYPES and checker.is_type(value, kind)


def _explain(error: ValidationError, doc: Document) -> list[Problem]:
    location: Location = tuple(error.absolute_path)
    value: Any = error.instance
    kind = error.validator
    rule: Any = error.validator_value
    schema: Any = error.schema
    if kind in ("anyOf", "oneOf"):
        return _explain_choice(error, doc, location)
    custom = schema.get("errorMessage") if isinstance(schema, dict) else None
    if len(error.schema_path) >= 2 and list(error.schema_path)[-2] == "propertyNames":
        # jsonschema reports a bad mapping key as the key string failing the inner rule,
        # located at the mapping: point at the key itself.
        reason = custom or error.message
        return [doc.problem((*location, value), f"invalid name `{value}`: {reason}", key=True)]
    if custom and kind not in ("type", "required", "additionalProperties"):
        shown = "" if _secret(location) or not isinstance(value, str) else f"`{value}` "
        return [doc.problem(location, f"{shown}{custom}")]
    if kind == "additionalProperties" and isinstance(value, dict):
        allowed = sorted(schema.get("properties", {}))
        if not allowed:  # a map whose values failed: jsonschema reports them separately
            return [doc.problem(location, error.message)]
        extra = [k for k in value if k not in allowed]
        return [
            doc.problem((*location, k), f"unknown key `{k}`{_suggest(k, allowed)}", key=True)
            for k in extra
        ]
    if kind == "required":
        missing = [k for k in rule if k not in value]
        return [doc.problem(location, f"missing required key `{k}`", key=True) for k in missing]
    if kind == "type":
        expected = rule
        names = [expected] if isinstance(expected, str) else list(expected)
        want = " or ".join(_SCHEMA_TYPES.get(n, n) for n in names)
        return [
            doc.problem(
                location, f"expected {want}, got {_describe(value)}{_quote_hint(names, value)}"
            )
        ]
    if kind == "enum":
        choices = [str(c) for c in rule]
        shown = "" if _secret(location) else f"`{value}` "
        hint = _suggest(str(value), choices) if isinstance(value, str) else ""
        if location[-1:] == ("auth",) and value in ("header", "query"):
            field = "header: NAME" if value == "header" else "param: NAME"
            hint = f"; write `auth: {{style: {value}, {field}}}`"
        return [doc.problem(location, f"{shown}is not one of: {', '.join(choices)}{hint}")]
    if kind == "const":
        return [doc.problem(location, f"must be {json.dumps(rule)}")]
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        words = {
            "minimum": "at least",
            "maximum": "at most",
            "exclusiveMinimum": "greater than",
            "exclusiveMaximum": "less than",
        }
        return [doc.problem(location, f"must be {words[kind]} {rule}")]
    if kind == "minLength":
        if rule == 1:
            return [doc.problem(location, "must not be empty")]
        return [doc.problem(location, f"must be at least {rule} characters")]
    if kind == "maxLength":
        return [doc.problem(location, f"must be at most {rule} characters")]
    if kind == "minItems":
        return [doc.problem(location, f"must list at least {rule} item(s)")]
    if _secret(location):
        return [doc.problem(location, f"invalid value ({kind})")]
    return [doc.problem(location, error.message)]


def _quote_hint(expected: list[str], value: Any) -> str:
    # YAML reads 2023-06-01 as a date, 1.0 as a number, yes as true: text needs quotes.
    if "string" in expected and not isinstance(value, (str, list, dict, type(None))):
        return " (put it in quotes to make it text)"
    return ""


def _explain_choice(error: ValidationError, doc: Document, location: Location) -> list[Problem]:
    """For anyOf/oneOf, explain the branch whose type the value has, else list the types."""
    root: Any = _validator().schema
    value = error.instance
    branches: dict[int, list[ValidationError]] = {}
    for sub in error.context or []:
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)  # type: ignore[arg-type]
    options: Any = error.validator_value
    matching = [
        i
        for i, branch in enumerate(options)
        if any(_type_matches(value, t) for t in _branch_types(branch, root))
    ]
    for i in matching:
        out = [p for sub in branches.get(i, []) for p in _explain(sub, doc)]
        if out:
            return out
    kinds: list[str] = []
    for branch in options:
        for t in _branch_types(branch, root):
            name = _SCHEMA_TYPES.get(t, t)
            if name not in kinds:
                kinds.append(name)
    want = " or ".join(kinds) if kinds else "a different value"
    return [doc.problem(location, f"expected {want}, got {_describe(value)}")]
