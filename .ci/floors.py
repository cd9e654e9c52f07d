"""Print pip constraints that pin every direct dependency to the floor pyproject.toml declares.

Usage: python .ci/floors.py [EXTRA ...] > floors.txt; then
pip install -c floors.txt '.[EXTRA]'. The runtime dependencies are always included; each
named extra adds its own. Every one of them must declare a floor (`>=X`), so that the floor
run tests what the package claims to support; transitive dependencies are left to float.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import tomllib

# name, optional [extras], then the specifiers up to an environment marker.
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*([^;]*)")


def floor_pins(pyproject: Path, extras: list[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    requirements = list(project["dependencies"])
    for extra in extras:
        requirements += project["optional-dependencies"][extra]
    pins = []
    for requirement in requirements:
        match = _REQUIREMENT.match(requirement)
        if match is None:
            raise SystemExit(f"cannot read the requirement {requirement!r}")
        name, specifiers = match[1], match[2]
        if name.lower().replace("_", "-") == project["name"]:
            continue  # the package's own extras, e.g. mini-llm[test]
        floors = re.findall(r">=\s*([^,\s]+)", specifiers)
        if len(floors) != 1:
            raise SystemExit(f"{requirement!r} needs exactly one floor (>=X) for the floor run")
        pins.append(f"{name}=={floors[0]}")
    return pins


if __name__ == "__main__":
    root = Path(__file__).resolve().parent.parent
    print("\n".join(floor_pins(root / "pyproject.toml", sys.argv[1:])))
