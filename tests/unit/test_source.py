"""Reading the YAML: marks, duplicate keys, syntax errors, merge keys, unreadable files."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from mini_llm.source import ConfigError, Document, Problem, parse_document, pointer, read_document


def parse(text: str) -> Document:
    return parse_document(textwrap.dedent(text), "t.yaml", {})


def syntax_error(text: str) -> Problem:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    [problem] = caught.value.problems
    return problem


# Marks ---------------------------------------------------------------------------------------


def test_marks_of_keys_and_values() -> None:
    doc = parse(
        """\
        version: 1
        providers:
          openai:
            base_url: https://api.openai.com/v1
            models: [gpt-4o, gpt-4o-mini]
        """
    )
    assert doc.key_marks[("providers", "openai")] == (3, 3)
    assert doc.marks[("providers", "openai")] == (4, 5)  # the value: the nested mapping
    assert doc.key_marks[("providers", "openai", "base_url")] == (4, 5)
    assert doc.marks[("providers", "openai", "base_url")] == (4, 15)
    assert doc.marks[("providers", "openai", "models", 1)] == (5, 22)
    assert doc.marks[()] == (1, 1)


def test_mark_of_a_missing_location_is_its_nearest_ancestor_key() -> None:
    doc = parse(
        """\
        version: 1
        server:
          host: 127.0.0.1
        """
    )
    assert doc.mark(("server", "port")) == (2, 1)
    assert doc.mark(("server", "host"), key=True) == (3, 3)
    assert doc.mark(("routes", "aliases", "x")) == (1, 1)


def test_values_are_plain_data() -> None:
    doc = parse(
        """\
        a: 1
        b: [true, null, 1.5, "x"]
        c: {d: e}
        8080: numeric key
        """
    )
    assert doc.data == {"a": 1, "b": [True, None, 1.5, "x"], "c": {"d": "e"}, "8080": "numeric key"}


def test_explicit_tag_that_does_not_fit_is_a_problem() -> None:
    doc = parse("port: !!int many\n")
    assert [str(p) for p in doc.problems] == [
        "t.yaml:1:7: invalid value: `many` is not a valid !!int (at /port)"
    ]


def test_a_non_scalar_key_is_a_problem() -> None:
    doc = parse("headers: {[a, b]: c}\n")
    assert [(p.line, p.col, p.message) for p in doc.problems] == [
        (1, 11, "mapping keys must be plain names")
    ]


# Duplicate keys --------------------------------------------------------------------------------


def test_duplicate_key_points_at_the_second_key_and_names_the_first_line() -> None:
    doc = parse(
        """\
        version: 1
        providers:
          openai:
            base_url: https://a/v1
            auth: none
            base_url: https://b/v1
        """
    )
    [problem] = doc.problems
    assert (problem.line, problem.col) == (6, 5)
    assert problem.message == "duplicate key `base_url` (first defined on line 4)"
    assert problem.pointer == "/providers/openai/base_url"
    # The first value is kept: later stages see one consistent document.
    assert doc.data["providers"]["openai"]["base_url"] == "https://a/v1"


def test_every_duplicate_is_reported() -> None:
    doc = parse("a: 1\nb: 2\na: 3\nb: 4\na: 5\n")
    assert [(p.line, p.message) for p in sorted(doc.problems)] == [
        (3, "duplicate key `a` (first defined on line 1)"),
        (4, "duplicate key `b` (first defined on line 2)"),
        (5, "duplicate key `a` (first defined on line 1)"),
    ]


def test_duplicate_keys_in_a_flow_mapping() -> None:
    doc = parse("headers: {x-a: 1, x-a: 2}\n")
    assert [(p.line, p.col) for p in doc.problems] == [(1, 19)]


# Syntax errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "col", "fragment"),
    [
        ("a: b: c\n", 1, 5, "mapping values are not allowed here"),
        ("a:\n  b: 1\n c: 2\n", 3, 2, "expected <block end>"),
        ("a: [1, 2\n", 2, 1, "(while parsing a flow sequence started on line 1)"),
        ("a: 'open\n", 2, 1, "(while scanning a quoted scalar started on line 1)"),
        ("a:\n\tb: 1\n", 2, 1, "indent with spaces, not tabs"),
        ("a: *nothing\n", 1, 4, "found undefined alias 'nothing'"),
        ("a: 1\n---\nb: 2\n", 2, 1, "but found another document"),
        ("x: {url: ${URL}}\n", 1, 11, 'put a ${...} value in quotes: "${VAR}"'),
    ],
)
def test_syntax_error_line_and_column(text: str, line: int, col: int, fragment: str) -> None:
    problem = syntax_error(text)
    assert (problem.line, problem.col) == (line, col)
    assert problem.message.startswith("YAML syntax error: ")
    assert fragment in problem.message


def test_control_character_is_located() -> None:
    problem = syntax_error("version: 1\nx: caf\u00e9\x01\n")
    assert (problem.line, problem.col) == (2, 8)
    assert problem.message == (
        "YAML syntax error: unacceptable character #x0001: special characters are not allowed"
    )


def test_a_problem_is_always_one_line() -> None:
    doc = parse('version: 1\n"a\\nb": {"c\\td": 1}\n')
    assert doc.data == {"version": 1, "a\nb": {"c\td": 1}}
    shown = str(Problem("f", 2, 1, "unknown key `a\nb`", "/a\nb"))
    assert shown == "f:2:1: unknown key `a\\nb` (at /a\\nb)"


def test_syntax_error_is_the_only_problem() -> None:
    with pytest.raises(ConfigError) as caught:
        parse("a: 1\na: 2\nb: c: d\n")
    assert len(caught.value.problems) == 1


# Merge keys and anchors ------------------------------------------------------------------------


def test_merge_key_local_values_win_and_keep_their_marks() -> None:
    doc = parse(
        """\
        providers:
          base: &base
            base_url: https://a/v1
            auth: none
          copy:
            <<: *base
            base_url: https://b/v1
        """
    )
    assert doc.data["providers"]["copy"] == {"base_url": "https://b/v1", "auth": "none"}
    assert doc.marks[("providers", "copy", "base_url")] == (7, 15)
    assert doc.key_marks[("providers", "copy", "base_url")] == (7, 5)
    # An inherited value is located where it is written: in the anchor.
    assert doc.marks[("providers", "copy", "auth")] == (4, 11)
    assert doc.problems == []


def test_merge_key_with_a_list_the_earlier_mapping_wins() -> None:
    doc = parse(
        """\
        one: &one {a: 1, b: 1}
        two: &two {b: 2, c: 2}
        both:
          <<: [*one, *two]
          c: 3
        """
    )
    assert doc.data["both"] == {"a": 1, "b": 1, "c": 3}


def test_merge_of_a_scalar_is_a_problem() -> None:
    doc = parse("a:\n  <<: 5\n  b: 1\n")
    assert [(p.line, p.col, p.message) for p in doc.problems] == [
        (2, 7, "`<<` merges a mapping or a list of mappings")
    ]


def test_anchor_reused_as_alias_is_plain_data() -> None:
    doc = parse("models: &m [a, b]\nagain: *m\n")
    assert doc.data == {"models": ["a", "b"], "again": ["a", "b"]}


def test_recursive_alias_is_a_problem_not_a_crash() -> None:
    doc = parse("a: &x [1, *x]\n")
    assert [p.message for p in doc.problems] == [
        "an alias inside this anchored value refers back to it"
    ]


# Empty, missing and unreadable files -----------------------------------------------------------


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n", "--- # nothing\n"])
def test_empty_file(text: str) -> None:
    problem = syntax_error(text)
    assert (problem.line, problem.col, problem.message) == (
        1,
        1,
        "the file is empty; expected a mapping",
    )


def read_problem(path: Path) -> Problem:
    with pytest.raises(ConfigError) as caught:
        read_document(path, {})
    [problem] = caught.value.problems
    return problem


def test_missing_file(tmp_path: Path) -> None:
    problem = read_problem(tmp_path / "nope.yaml")
    assert str(problem) == f"{tmp_path / 'nope.yaml'}:1:1: file not found"


def test_directory_instead_of_a_file(tmp_path: Path) -> None:
    assert read_problem(tmp_path).message == "is a directory, not a file"


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "secret.yaml"
    path.write_text("version: 1\n")

    def refuse(*args: object, **kwargs: object) -> str:
        raise PermissionError(13, "Permission denied")

    # chmod 000 does not stop root, who may run the tests.
    monkeypatch.setattr(Path, "read_text", refuse)
    assert read_problem(path).message == "permission denied"


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("version: 1\nx: caf\xe9\n".encode("latin-1"))
    assert read_problem(path).message.startswith("not UTF-8 text")


def test_display_name_is_used_in_problems(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("a: b: c\n")
    with pytest.raises(ConfigError) as caught:
        read_document(path, {}, display="shown.yaml")
    assert str(caught.value).startswith("shown.yaml:1:5: YAML syntax error")


# Problems ----------------------------------------------------------------------------------------


def test_problem_format_and_order() -> None:
    later = Problem("f.yaml", 10, 2, "b", "/x")
    earlier = Problem("f.yaml", 9, 30, "a", "/y", "warning")
    assert str(later) == "f.yaml:10:2: b (at /x)"
    assert str(earlier) == "f.yaml:9:30: warning: a (at /y)"
    assert str(Problem("f.yaml", 1, 1, "c")) == "f.yaml:1:1: c"
    assert sorted([later, earlier]) == [earlier, later]
    assert earlier.as_dict() == {
        "file": "f.yaml",
        "line": 9,
        "col": 30,
        "level": "warning",
        "message": "a",
        "pointer": "/y",
    }


def test_config_error_sorts_and_drops_repeats() -> None:
    one = Problem("f", 2, 1, "x", "/a")
    same_place = Problem("f", 2, 1, "x", "/b")  # reached through a YAML alias
    first = Problem("f", 1, 5, "y")
    error = ConfigError([one, same_place, first])
    assert error.problems == [first, one]
    assert str(error) == "f:1:5: y\nf:2:1: x (at /a)"


@pytest.mark.parametrize(
    ("location", "expected"),
    [((), "/"), (("a", 0, "b"), "/a/0/b"), (("a/b", "c~d"), "/a~1b/c~0d"), (("",), "/")],
)
def test_pointer(location: tuple[str | int, ...], expected: str) -> None:
    assert pointer(location) == expected
