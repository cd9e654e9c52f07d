"""The translate subpackage stays pure: standard library only, nothing of the server."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import mini_llm.translate as translate

PACKAGE = Path(translate.__file__).parent
ALLOWED = {
    "__future__",
    "abc",
    "collections",
    "dataclasses",
    "json",
    "re",
    "time",
    "types",
    "typing",
}


def test_only_the_standard_library_and_its_own_modules_are_imported() -> None:
    for path in sorted(PACKAGE.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in ALLOWED, f"{path.name} imports {name}"
                assert name.split(".")[0] in sys.stdlib_module_names or name == "__future__"


def test_every_module_has_a_one_line_docstring() -> None:
    for path in sorted(PACKAGE.glob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        assert doc and "\n" not in doc, path.name


def test_the_public_names_exist() -> None:
    for name in translate.__all__:
        assert hasattr(translate, name), name
