"""Helpers for unit tests: load a routing table from text, list its problems."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest

from mini_llm.config import Config, load_config
from mini_llm.source import ConfigError, Problem

REPO = Path(__file__).resolve().parent.parent

MINIMAL = """\
version: 1
providers:
  openai:
    base_url: https://api.openai.com/v1
    keys: sk-test-0000000000000000
"""


def write(tmp_path: Path, text: str, name: str = "mini-llm.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, env: Mapping[str, str] | None = None) -> Config:
    """Load a table that must be valid."""
    return load_config(write(tmp_path, text), env or {})


def problems(tmp_path: Path, text: str, env: Mapping[str, str] | None = None) -> list[Problem]:
    """Load a table that must be invalid; its problems."""
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), env or {})
    return caught.value.problems


def where(found: list[Problem]) -> list[tuple[int, int, str]]:
    """(line, col, message) of each problem, for compact assertions."""
    return [(p.line, p.col, p.message) for p in found]
