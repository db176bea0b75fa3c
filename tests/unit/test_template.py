"""Tests for shared.template: the Go text/template subset applied to raw job-spec text."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import InvalidSpec
from shared.template import render, variables_from


def _problems(text: str, variables: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(InvalidSpec) as info:
        render(text, variables or {})
    return [str(p) for p in info.value.problems]


def _str_or_invalid_spec(text: str, variables: dict[str, str]) -> None:
    try:
        result = render(text, variables)
    except InvalidSpec:
        return
    assert isinstance(result, str)


def test_text_without_actions_is_returned_unchanged() -> None:
    blob = "QUJD" * 30_000 + "\n}} { } ."
    assert render(blob, {}) is blob


@pytest.mark.parametrize("text", ["{{.query}}", "{{ .query }}", "{{\t.query\n}}", "{{(.query)}}"])
def test_field_forms(text: str) -> None:
    assert render(text, {"query": "hello"}) == "hello"


def test_field_names_with_digits_and_underscores() -> None:
    assert render("{{.a_1}}-{{._b2}}", {"a_1": "x", "_b2": "y"}) == "x-y"


def test_seed_snippet_with_and_without_start_time() -> None:
    text = '          - {{.query}}\n          - {{or (index . "start-time") ""}}\n'
    assert render(text, {"query": "q"}) == "          - q\n          - \n"
    both = {"query": "q", "start-time": "2024-01-01"}
    assert render(text, both) == "          - q\n          - 2024-01-01\n"


def test_config_default() -> None:
    text = '\'--config={{or (index . "config") "/app/config.yaml"}}\''
    assert render(text, {}) == "'--config=/app/config.yaml'"
    assert render(text, {"config": "/x.yaml"}) == "'--config=/x.yaml'"
    assert render(text, {"config": ""}) == "'--config=/app/config.yaml'"


def test_count() -> None:
    assert render("count: {{.count}}\n", {"count": "3"}) == "count: 3\n"


def test_index_with_any_key_and_missing_key_is_empty() -> None:
    assert render('{{index . "a-b.c d"}}', {"a-b.c d": "v"}) == "v"
    assert render('[{{index . "nope"}}]', {}) == "[]"
    assert render("{{index .}}", {"b": "2", "a": "1"}) == "map[a:1 b:2]"


def test_or_returns_first_non_empty_else_last() -> None:
    assert render('{{or "" "b" "c"}}', {}) == "b"
    assert render('{{or "" ""}}', {}) == ""
    assert render('{{or .x "d"}}', {"x": "set"}) == "set"
    assert render('{{or .x "d"}}', {"x": ""}) == "d"
    # Lazy, as in Go 1.18+: an argument after the first non-empty one is never evaluated.
    assert render('{{or "a" .missing}}', {}) == "a"


def test_string_literals() -> None:
    assert render(r'{{"a\"b\\c\nd\te"}}', {}) == 'a"b\\c\nd\te'
    assert render(r'{{"\x41\101\u00e9\U0001F600"}}', {}) == "AAé\U0001f600"
    assert render(r'{{"\xc3\xa9"}}', {}) == "é"
    assert render('{{`raw \\n }} "x"\nline`}}', {}) == 'raw \\n }} "x"\nline'
    assert render('{{"}}"}}', {}) == "}}"


def test_pipelines() -> None:
    assert render('{{.x | or "d"}}', {"x": ""}) == "d"
    assert render('{{"k" | index .}}', {"k": "v"}) == "v"


def test_trim_markers() -> None:
    assert render("a  \n\t {{- .x -}} \n\n b", {"x": "X"}) == "aXb"
    assert render("a {{- .x }} b", {"x": "X"}) == "aX b"
    assert render("a {{ .x -}} b", {"x": "X"}) == "a Xb"
    assert render("items:\n  {{- /* none */ -}}\n  end", {}) == "items:end"


def test_minus_without_space_is_not_a_trim_marker() -> None:
    (problem,) = _problems("{{.x-}}", {"x": "1"})
    assert "' -}}'" in problem
    assert "trim markers are written" in _problems("{{-.x}}")[0]


def test_comments() -> None:
    assert render("a{{/* c\n multi */}}b", {}) == "ab"
    assert render("a {{- /* c */}} b", {}) == "a b"
    assert render("a {{/* c */ -}} b", {}) == "a b"
    assert "unclosed comment" in _problems("{{/* never")[0]
    assert "comment ends before" in _problems("{{/* c */ x}}")[0]


def test_map_and_field_chain_printing() -> None:
    assert render("{{.}}", {"b": "2", "a": "1"}) == "map[a:1 b:2]"
    assert "field b" in _problems("{{.a.b}}", {"a": "A"})[0]


def test_missing_variable_names_variable_line_and_fix() -> None:
    (problem,) = _problems("a: 1\nb: {{ .query }}\n")
    assert problem == (
        'line 2, column 4: template variable "query" is not set; pass it with -V query=VALUE or -E'
    )


def test_all_missing_variables_reported_at_once() -> None:
    problems = _problems('{{.a}}\n  {{.b}} {{index . "c"}}\n{{or .d .e}}')
    assert problems == [
        f'line {line}, column {col}: template variable "{name}" is not set; '
        f"pass it with -V {name}=VALUE or -E"
        for line, col, name in [(1, 1, "a"), (2, 3, "b"), (3, 1, "d"), (3, 1, "e")]
    ]


def test_error_carries_source() -> None:
    with pytest.raises(InvalidSpec) as info:
        render("{{.x}}", {}, source="job.yaml")
    assert str(info.value).startswith("job.yaml: line 1, column 1:")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("a {{ .x ", "unclosed action"),
        ("{{ foo . }}", "unknown function 'foo'"),
        ("{{ printf . }}", "unknown function 'printf'"),
        ("{{ index }}", "index needs at least 1 argument"),
        ("{{ or }}", "or needs at least 1 argument"),
        ('{{ "abc }}', "unterminated quoted string"),
        ('{{ "abc\n" }}', "unterminated quoted string"),
        ("{{ `abc }}", "unterminated raw string"),
        (r'{{ "\q" }}', "invalid escape"),
        (r'{{ "\x4" }}', "invalid escape"),
        (r'{{ "\400" }}', "out of range"),
        ("{{ (index . }}", "unclosed '('"),
        ("{{ .x) }}", "unexpected ')'"),
        ("{{}}", "missing expression"),
        ("{{ () }}", "missing expression"),
        ("{{ .x | }}", "missing expression after '|'"),
        ("{{ 3 }}", "numbers are not supported"),
        ("{{ if .x }}y{{ end }}", "'if' is not supported"),
        ("{{ $x }}", "not supported"),
        ('{{ .x "y" }}', "not a function"),
        ('{{ "a""b" }}', "unexpected string"),
        ('{{ "k" | .x }}', "cannot pipe into .x"),
        ('{{ index . "a" "b" }}', "cannot index a string"),
        ("{{ @ }}", "unexpected character '@'"),
    ],
)
def test_syntax_and_evaluation_errors(text: str, needle: str) -> None:
    problems = _problems(text, {"x": "1", "a": "A"})
    assert any(needle in p for p in problems), problems
    assert problems[0].startswith("line 1, column 1:") or "unclosed action" in problems[0]


def test_syntax_error_and_missing_variables_are_reported_together() -> None:
    problems = _problems("{{ .a }}\n{{ foo }}\n{{ .b }}")
    where = [p.split(":")[0] for p in problems]
    assert where == ["line 1, column 1", "line 2, column 1", "line 3, column 1"]
    assert "unknown function" in problems[1]


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    assert "nested deeper" in _problems("{{" + "(" * 500 + ".x" + ")" * 500 + "}}")[0]


@given(
    st.text(alphabet=st.sampled_from(list('{}."()-|`\\/* \nabx$3')) | st.characters(), max_size=60)
)
def test_fuzz_render_returns_str_or_raises_invalid_spec(text: str) -> None:
    _str_or_invalid_spec(text, {"a": "A", "b": "", "x": "X"})


@given(
    st.lists(st.sampled_from(["{{", "}}", "{{- ", " -}}", ".a", ".", '"b"', "(", ")"]), max_size=12)
)
def test_fuzz_render_token_soup(parts: list[str]) -> None:
    _str_or_invalid_spec("".join(parts), {"a": "A"})


def test_variables_from_pairs_and_environment() -> None:
    environ = {"SHOAL_A": "env", "query": "env-q", "OTHER": "o", "XSHOAL_": "s"}
    got = variables_from(
        ["query=v", "a=b=c", "empty="], env_regex="^SHOAL_|^query$", environ=environ
    )
    assert got == {"SHOAL_A": "env", "query": "v", "a": "b=c", "empty": ""}
    assert variables_from(["k=1", "k=2"]) == {"k": "2"}
    assert variables_from(env_regex="SHOAL", environ=environ) == {"SHOAL_A": "env", "XSHOAL_": "s"}
    assert variables_from(env_regex=None, environ=environ) == {}


def test_variables_from_uses_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_TEST_TEMPLATE_VAR", "yes")
    got = variables_from(env_regex="^SHOAL_TEST_TEMPLATE_VAR$")
    assert got == {"SHOAL_TEST_TEMPLATE_VAR": "yes"}


def test_variables_from_errors_list_every_bad_pair() -> None:
    with pytest.raises(InvalidSpec) as info:
        variables_from(["foo", "=v", "ok=1"], env_regex="(", environ={})
    problems = [str(p) for p in info.value.problems]
    assert problems[0].startswith('-E "(": not a valid regular expression')
    assert problems[1:] == [
        '-V "foo": expected KEY=VALUE, e.g. -V query=hello',
        '-V "=v": expected KEY=VALUE, e.g. -V query=hello',
    ]


def test_variables_feed_render() -> None:
    variables = variables_from(["query=SELECT 1"])
    assert render('q: {{.query}} t: {{or (index . "start-time") "now"}}', variables) == (
        "q: SELECT 1 t: now"
    )
