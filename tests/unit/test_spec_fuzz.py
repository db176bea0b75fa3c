"""Property tests: whatever the input, the spec loader returns a JobSpec or raises InvalidSpec."""

from __future__ import annotations

import copy
import functools
import json
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.errors import InvalidSpec
from shared.spec import JobSpec, dump_yaml, load_spec, parse_document, spec_from_data
from shared.template import render
from tests.corpus import (
    FIXTURE_VARIABLES,
    corpus_names,
    fixture_names,
    fixture_text,
    require_corpus,
)

#: The -V variables of the reference corpus's templated files.
_CORPUS_VARIABLES = {
    "count": "2",
    "query": "q",
    "AccessLogBucket": "b",
    "AccessLogPrefix": "p",
    "AWSRegion": "r",
    "Region": "eu",
    "Events": "10",
    "StartDate": "2024-01-01",
    "EndDate": "2024-02-01",
    "RotateInterval": "day",
    "model_url": "https://x/m",
    "input_bucket": "in",
    "classes": "0",
    "model_name": "m.pt",
    "adb_password": "pw",
    "fulltext": "ft",
    "steps": "5",
    "bucket": "bk",
    "queue_url": "https://sqs/q",
}
# A small stand-in for the corpus's wasm files, legacy form included.
_LEGACY_WASM = {
    "Type": "batch",
    "Tasks": [
        {
            "Engine": {
                "Type": "wasm",
                "Params": {
                    "EntryModule": {
                        "Source": {
                            "Type": "inline",
                            "Params": {"URL": "data:application/wasm;base64,AGFzbQ=="},
                        },
                        "Target": "",
                    }
                },
            }
        }
    ],
}


def _load_fixtures() -> list[dict[str, Any]]:
    """The project's fixtures, rendered: always there (the wasm ones hold a 1 KB module)."""
    return [
        parse_document(render(fixture_text(name), FIXTURE_VARIABLES.get(name, {})))
        for name in fixture_names()
    ]


@functools.cache
def _load_corpus() -> list[dict[str, Any]]:
    """The reference corpus, rendered; read when a test first asks (skips without it)."""
    folder = require_corpus()
    docs = []
    for name in corpus_names():
        if name.startswith("wasm"):
            continue  # the wasm files are 110 KB each: too slow to mutate hundreds of times
        text = (folder / name).read_text(encoding="utf-8")
        docs.append(parse_document(render(text, _CORPUS_VARIABLES)))
    docs.append(_LEGACY_WASM)
    return docs


FIXTURE_DOCS = _load_fixtures()

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FUZZ_DOCS = settings(FUZZ, max_examples=200)  # each example validates a whole real spec


def check(load: Any, *args: Any) -> JobSpec | None:
    """Run a loader: a JobSpec that round-trips, or a clean InvalidSpec; anything else fails."""
    try:
        spec = load(*args)
    except InvalidSpec as exc:
        assert exc.problems
        for problem in exc.problems:
            assert isinstance(problem.path, str)
            assert isinstance(problem.message, str) and problem.message
            assert "Traceback" not in problem.message
        assert str(exc)
        return None
    assert isinstance(spec, JobSpec)
    assert len(spec.tasks) == 1
    assert (spec.count is None) == (spec.type in ("ops", "daemon"))
    dumped = spec.dump()
    wire = json.loads(json.dumps(dumped, allow_nan=False))
    assert spec_from_data(wire) == spec
    return spec


# ---- strategies ---------------------------------------------------------------------------------

KEYS = st.sampled_from(
    [
        "Name",
        "Type",
        "Count",
        "Tasks",
        "Engine",
        "Params",
        "Image",
        "Resources",
        "CPU",
        "Memory",
        "Timeouts",
        "Constraints",
        "Key",
        "Operator",
        "Values",
        "InputSources",
        "Source",
        "Target",
        "ResultPaths",
        "Path",
        "Publisher",
        "Network",
        "EntryModule",
        "Env",
        "Meta",
        "Labels",
        "Namespace",
        "Priority",
    ]
)
TEXT = st.text(max_size=12)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT,
    st.sampled_from(
        [
            "batch",
            "ops",
            "daemon",
            "service",
            "docker",
            "wasm",
            "noop",
            "s3",
            "local",
            "/out",
            "250m",
            "1Gb",
            "=",
            "in",
            "exists",
            "gt",
            "5m",
            "-1",
            "0",
            "data:,x",
            "../x",
            "HTTP",
        ]
    ),
)


def json_values(max_leaves: int = 20) -> st.SearchStrategy[Any]:
    return st.recursive(
        SCALARS,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(st.one_of(KEYS, TEXT), inner, max_size=4),
        ),
        max_leaves=max_leaves,
    )


def _containers(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths of every mapping and list inside `value`."""
    out = []
    if isinstance(value, dict):
        out.append(path)
        for k, v in value.items():
            out.extend(_containers(v, (*path, k)))
    elif isinstance(value, list):
        out.append(path)
        for i, v in enumerate(value):
            out.extend(_containers(v, (*path, i)))
    return out


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        value = value[part]
    return value


def _recase(value: Any, how: str) -> Any:
    if isinstance(value, dict):
        change = {"lower": str.lower, "upper": str.upper, "swap": str.swapcase}[how]
        out: dict[Any, Any] = {}
        for k, v in value.items():
            out.setdefault(change(k) if isinstance(k, str) else k, _recase(v, how))
        return out
    if isinstance(value, list):
        return [_recase(v, how) for v in value]
    return value


@st.composite
def mutated_docs(draw: st.DrawFn, docs: list[dict[str, Any]]) -> Any:
    doc = copy.deepcopy(draw(st.sampled_from(docs)))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        spots = _containers(doc)
        path = draw(st.sampled_from(spots))
        target = _get(doc, path)
        action = draw(
            st.sampled_from(["delete", "retype", "insert", "nest", "recase", "duplicate"])
        )
        if isinstance(target, dict):
            keys = list(target)
            if action == "delete" and keys:
                del target[draw(st.sampled_from(keys))]
            elif action == "retype" and keys:
                target[draw(st.sampled_from(keys))] = draw(json_values(6))
            elif action == "insert":
                target[draw(st.one_of(KEYS, TEXT))] = draw(json_values(6))
            elif action == "nest" and keys:
                key = draw(st.sampled_from(keys))
                target[key] = draw(st.sampled_from([[target[key]], {"Nested": target[key]}]))
            elif action == "recase":
                how = draw(st.sampled_from(["lower", "upper", "swap"]))
                recased = _recase(target, how)
                target.clear()
                target.update(recased)
            elif action == "duplicate" and keys:
                key = draw(st.sampled_from(keys))
                target[key.swapcase()] = target[key]
        elif isinstance(target, list):
            if action == "delete" and target:
                del target[draw(st.integers(min_value=0, max_value=len(target) - 1))]
            elif action == "retype" and target:
                index = draw(st.integers(min_value=0, max_value=len(target) - 1))
                target[index] = draw(json_values(6))
            elif action in ("insert", "duplicate"):
                target.append(copy.deepcopy(target[0]) if target else draw(json_values(6)))
            elif action == "nest" and target:
                index = draw(st.integers(min_value=0, max_value=len(target) - 1))
                target[index] = [target[index]]
        if not path and not isinstance(doc, dict):
            break
    if draw(st.booleans()):
        doc = _recase(doc, draw(st.sampled_from(["lower", "upper", "swap"])))
    return doc


# ---- properties ---------------------------------------------------------------------------------


def test_the_fixture_docs_are_valid_to_start_with() -> None:
    assert len(FIXTURE_DOCS) >= 30
    for doc in FIXTURE_DOCS:
        assert check(spec_from_data, doc) is not None


def test_the_corpus_docs_are_valid_to_start_with() -> None:
    for doc in _load_corpus():
        assert check(spec_from_data, doc) is not None


@FUZZ
@given(json_values(40))
def test_random_data(data: Any) -> None:
    check(spec_from_data, data)


@FUZZ
@given(st.dictionaries(KEYS, json_values(15), max_size=8))
def test_random_mappings_with_spec_keys(data: dict[str, Any]) -> None:
    check(spec_from_data, data)


def mutated_documents(docs: list[dict[str, Any]]) -> None:
    @FUZZ_DOCS
    @given(mutated_docs(docs))
    def run(doc: Any) -> None:
        check(spec_from_data, doc)

    run()


def mutated_documents_as_text(docs: list[dict[str, Any]]) -> None:
    @FUZZ_DOCS
    @given(mutated_docs(docs), st.sampled_from(["yaml", "json", "flow"]))
    def run(doc: Any, form: str) -> None:
        if form == "json":
            text = json.dumps(doc, indent=1)
        else:
            text = yaml.safe_dump(doc, default_flow_style=form == "flow", allow_unicode=True)
        check(load_spec, text, {})

    run()


def valid_specs_are_stable(docs: list[dict[str, Any]]) -> None:
    """Validating a canonical dump gives back the same dump (the orchestrator relies on it)."""

    @FUZZ_DOCS
    @given(mutated_docs(docs))
    def run(doc: Any) -> None:
        try:
            spec = spec_from_data(doc)
        except InvalidSpec:
            return
        dumped = spec.dump()
        assert spec_from_data(dumped).dump() == dumped
        assert load_spec(dump_yaml(dumped)).dump() == dumped
        assert parse_document(dump_yaml(doc)) == doc

    run()


def test_mutated_fixture_documents() -> None:
    mutated_documents(FIXTURE_DOCS)


def test_mutated_corpus_documents() -> None:
    mutated_documents(_load_corpus())


def test_mutated_fixture_documents_as_text() -> None:
    mutated_documents_as_text(FIXTURE_DOCS)


def test_mutated_corpus_documents_as_text() -> None:
    mutated_documents_as_text(_load_corpus())


def test_valid_fixture_specs_are_stable() -> None:
    valid_specs_are_stable(FIXTURE_DOCS)


def test_valid_corpus_specs_are_stable() -> None:
    valid_specs_are_stable(_load_corpus())


@FUZZ
@given(st.text(max_size=300))
def test_random_text(text: str) -> None:
    check(load_spec, text, {})


YAMLISH = st.lists(
    st.sampled_from(
        [
            "Type: batch\n",
            "Tasks:\n",
            "- Engine:\n",
            "    Type: docker\n",
            "  Params:\n",
            "      Image: x\n",
            "Count: ",
            "{{.a}}",
            "{{",
            "}}",
            "[",
            "]",
            "{",
            "}",
            ": ",
            "- ",
            "&a ",
            "*a ",
            "!!binary ",
            "!!set ",
            "? ",
            "---\n",
            "...\n",
            "'",
            '"',
            "#",
            "\t",
            "  ",
            "\n",
            "0x1F",
            ".inf",
            "~",
            "true",
            "yes",
            "<<: ",
            "|\n",
            ">\n",
            "%YAML 1.2\n",
            "\ufeff",
            "\x00",
            "é",
            "Resources: {CPU: ",
            "250m",
            "}\n",
        ]
    ),
    max_size=30,
).map("".join)


@FUZZ
@given(YAMLISH, st.dictionaries(st.sampled_from(["a", "b"]), TEXT, max_size=2))
def test_random_yamlish_text(text: str, variables: dict[str, str]) -> None:
    check(load_spec, text, variables)


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes(data: bytes) -> None:
    check(load_spec, data, {})
