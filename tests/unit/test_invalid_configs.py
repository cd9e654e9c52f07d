"""Every file in tests/invalid/ fails to load with exactly the problems its header expects.

A file states its expectations in leading comments, one per problem, in the order they
are reported (sorted by line, then column):

    # expect: LINE:COL fragment of the message
    # env: NAME=value        (optional: the environment the file is loaded with)
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mini_llm.config import load_config
from mini_llm.source import ConfigError, Problem

INVALID = Path(__file__).parent / "invalid"
_EXPECT = re.compile(r"^# expect: (\d+):(\d+) (.+)$")
_ENV = re.compile(r"^# env: ([A-Za-z_][A-Za-z0-9_]*)=(.*)$")


def _header(path: Path) -> tuple[list[tuple[int, int, str]], dict[str, str]]:
    expects: list[tuple[int, int, str]] = []
    env: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if match := _EXPECT.match(line):
            expects.append((int(match[1]), int(match[2]), match[3]))
        elif match := _ENV.match(line):
            env[match[1]] = match[2]
        elif not line.startswith("#"):
            break
    return expects, env


CASES = sorted(INVALID.glob("*.yaml"))


def test_the_folder_has_cases() -> None:
    assert len(CASES) >= 25
    for path in CASES:
        assert _header(path)[0], f"{path.name} has no `# expect:` line"


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_invalid_config(path: Path) -> None:
    expects, env = _header(path)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env)
    problems: list[Problem] = caught.value.problems
    shown = "\n".join(str(p) for p in problems)
    assert len(problems) == len(expects), f"reported:\n{shown}"
    for problem, (line, col, fragment) in zip(problems, expects, strict=True):
        assert (problem.line, problem.col) == (line, col), f"reported:\n{shown}"
        assert fragment in str(problem), f"reported:\n{shown}"
        assert problem.file == str(path)
        assert problem.level == "error"
    assert problems == sorted(problems)
