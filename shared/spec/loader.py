"""Turns the user's text (YAML or JSON, maybe templated) into a validated JobSpec."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

import yaml
from pydantic import ValidationError

from shared.errors import InvalidSpec, Problem
from shared.spec.models import JobSpec
from shared.spec.normalize import normalize_keys, normalize_task
from shared.spec.problems import dedupe, join, kind_of, problems_from, short
from shared.template import render

MAX_SPEC_BYTES = 8 * 1024 * 1024
#: Deepest nesting of mappings and lists accepted (the spec itself needs about 10).
MAX_DEPTH = 64
#: Most values a document may hold once YAML aliases are expanded (a "billion laughs" guard).
MAX_VALUES = 1_000_000
_MAX_SHAPE_PROBLEMS = 20

_EMPTY = "the spec is empty; a job needs at least Type and Tasks"


def load_spec(
    text: str | bytes,
    variables: Mapping[str, str] | None = None,
    *,
    source: str = "",
) -> JobSpec:
    """Render, parse and validate a job spec; raise InvalidSpec listing every problem."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad = exc.object[exc.start]
            raise InvalidSpec(
                f"the spec is not UTF-8 text (byte 0x{bad:02x} at offset {exc.start}); "
                "save it as UTF-8",
                source=source,
            ) from None
    if len(text) > MAX_SPEC_BYTES:
        raise InvalidSpec(
            f"the spec is {len(text)} bytes; the limit is {MAX_SPEC_BYTES}", source=source
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # stdin decoded with surrogateescape, or a lone surrogate
        code = ord(text[exc.start])
        what = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else "a lone surrogate"
        raise InvalidSpec(
            f"the spec is not UTF-8 text ({what} at character {exc.start})", source=source
        ) from None
    if "{{" in text:
        text = render(text, variables or {}, source=source)
    return spec_from_data(parse_document(text, source=source), source=source)


# libyaml's parser where PyYAML was built with it (the wheels are): the pure-Python scanner
# is slow on long block scalars (docs/benchmarks.md). Construction stays in Python.
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_SafeLoader):  # type: ignore[valid-type,misc]
    """PyYAML's safe loader with YAML 1.2 core-schema scalars and duplicate keys refused.

    YAML 1.1 (PyYAML's default) silently rewrites what users mean as text: `yes`/`on` become
    true, `010` becomes 8, `12:30` becomes 750, `2024-01-01` a date, and a lone `=` is an error.
    Like Go's YAML decoders, only `true`/`false`, `null`/`~` and decimal, `0x`/`0o` numbers are
    typed here; everything else stays text.
    """

    yaml_implicit_resolvers: dict[Any, list[tuple[str, re.Pattern[str]]]] = {}

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE:
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"found duplicate key {key_node.value!r}",
                        key_node.start_mark,
                    )
                seen.add(key_node.value)
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        text = str(self.construct_scalar(node))
        sign = -1 if text.startswith("-") else 1
        digits = text.lstrip("+-")
        base = {"0x": 16, "0o": 8}.get(digits[:2], 10)
        return _Int(sign * int(digits[2:] if base != 10 else digits, base), text)

    def construct_yaml_float(self, node: yaml.ScalarNode) -> float:
        text = str(self.construct_scalar(node))
        if text.lower().endswith((".inf", ".nan")):
            return _Float(text.lower().replace(".", ""), text)
        return _Float(text, text)


class _Int(int):
    """A YAML integer that prints as written, so that `- 010` in a list of text stays `010`."""

    text: str

    def __new__(cls, value: int, text: str) -> _Int:
        number = super().__new__(cls, value)
        number.text = text
        return number

    def __str__(self) -> str:
        return self.text

    def __getnewargs__(self) -> tuple[int, str]:  # type: ignore[override]  # copy and pickle
        return int(self), self.text


class _Float(float):
    """A YAML float that prints as written, so that `--version 1.10` does not become `1.1`."""

    text: str

    def __new__(cls, value: str | float, text: str) -> _Float:
        number = super().__new__(cls, value)
        number.text = text
        return number

    def __str__(self) -> str:
        return self.text

    def __getnewargs__(self) -> tuple[float, str]:  # type: ignore[override]  # copy and pickle
        return float(self), self.text


_MERGE = "tag:yaml.org,2002:merge"
_Loader.yaml_implicit_resolvers = {}
for _first, _resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items():
    _kept = [(tag, rx) for tag, rx in _resolvers if tag in (_MERGE, "tag:yaml.org,2002:null")]
    if _kept:
        _Loader.yaml_implicit_resolvers[_first] = _kept
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
    list("-+0123456789"),
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+.0123456789"),
)
_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)
_Loader.add_constructor("tag:yaml.org,2002:float", _Loader.construct_yaml_float)


class _Dumper(yaml.SafeDumper):
    """Quotes every string that YAML 1.1 or Shoal's loader would read as something else."""

    yaml_implicit_resolvers: dict[Any, list[tuple[str, re.Pattern[str]]]] = {
        first: [
            *yaml.SafeDumper.yaml_implicit_resolvers.get(first, []),
            *_Loader.yaml_implicit_resolvers.get(first, []),
        ]
        for first in {*yaml.SafeDumper.yaml_implicit_resolvers, *_Loader.yaml_implicit_resolvers}
    }


def dump_yaml(data: Any) -> str:
    """YAML text that `load_spec` (and any other YAML reader) reads back as `data`."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True)


def _represent(dumper: yaml.SafeDumper, value: _Int | _Float) -> yaml.ScalarNode:
    """parse_document's output may be dumped again: numbers are written as the user wrote them."""
    kind = "int" if isinstance(value, int) else "float"
    return dumper.represent_scalar(f"tag:yaml.org,2002:{kind}", value.text)


yaml.SafeDumper.add_representer(_Int, _represent)
yaml.SafeDumper.add_representer(_Float, _represent)


def parse_document(text: str, *, source: str = "") -> Any:
    """YAML (JSON is tried first, for its better error positions); empty documents refused.

    A JSON document with a syntax error is reported as such; a document starting with `{`
    that is not JSON (`{Type: batch, ...}`) is read as a YAML flow mapping.
    """
    stripped = text.strip().removeprefix("\ufeff").lstrip()
    if not stripped:
        raise InvalidSpec(_EMPTY, source=source)
    if stripped.startswith("{"):
        try:
            return json.loads(stripped)
        except json.JSONDecodeError as exc:
            if re.match(r"\{\s*\"", stripped):  # meant as JSON, not as a YAML flow mapping
                where = f"line {exc.lineno}, column {exc.colno}"
                raise InvalidSpec(
                    [Problem(where, f"invalid JSON: {exc.msg}")], source=source
                ) from None
        except RecursionError:
            raise InvalidSpec([_too_deep("")], source=source) from None
    try:
        docs = [d for d in yaml.load_all(text, Loader=_Loader) if d is not None]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        if _is_nesting_limit(exc):
            raise InvalidSpec([_too_deep(where)], source=source) from None
        raise InvalidSpec(
            [Problem(where, f"invalid YAML: {exc.problem or exc}")], source=source
        ) from None
    except RecursionError:
        raise InvalidSpec([_too_deep("")], source=source) from None
    except (yaml.YAMLError, ValueError, OverflowError) as exc:
        raise InvalidSpec(f"invalid YAML: {exc}", source=source) from None
    if not docs:
        raise InvalidSpec(_EMPTY, source=source)
    if len(docs) > 1:
        raise InvalidSpec(
            f"the file holds {len(docs)} YAML documents; submit one job per file", source=source
        )
    return docs[0]


def _too_deep(where: str) -> Problem:
    """Shoal's one message for a document nested too deeply, whichever layer noticed: the
    parser (libyaml refuses about 1,000 levels, older releases overflow Python's stack) or
    the shape check after it (MAX_DEPTH)."""
    return Problem(where, f"is nested more than {MAX_DEPTH} levels deep")


def _is_nesting_limit(exc: yaml.MarkedYAMLError) -> bool:
    # libyaml (bundled with PyYAML >= 6.0.4) stops at its own nesting limit with a scanner
    # error; its wording is the only mark it leaves, so this is the one place that reads it.
    return isinstance(exc, yaml.scanner.ScannerError) and "nesting" in (exc.problem or "")


def spec_from_canonical(raw: bytes) -> JobSpec:
    """A spec Shoal itself stored or sent (already normalised by `dump()`): validated by
    pydantic straight from JSON, which skips the YAML and normalising passes of the full
    path; it falls back to that for anything that is not in canonical form."""
    try:
        return JobSpec.model_validate_json(raw)
    except ValidationError:
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise InvalidSpec(f"the spec is not JSON: {exc}") from None
        return spec_from_data(data)


def spec_from_data(data: Any, *, source: str = "") -> JobSpec:
    """Validate an already-parsed document (what an API client sends as JSON)."""
    if not isinstance(data, dict):
        raise InvalidSpec(
            f"the spec must be a mapping of fields, not {kind_of(data)}", source=source
        )
    problems = check_shape(data)
    if problems:
        raise InvalidSpec(problems, source=source)
    data = normalize_keys(data, JobSpec, "", problems)
    tasks = data.get("Tasks")
    if isinstance(tasks, list):
        data["Tasks"] = [normalize_task(t, join("Tasks", i), problems) for i, t in enumerate(tasks)]
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as exc:
        problems.extend(problems_from(exc, ""))
        raise InvalidSpec(dedupe(problems), source=source) from None
    if problems:
        raise InvalidSpec(dedupe(problems), source=source)
    return spec


_SCALARS = (str, int, float, bool, type(None))


def check_shape(data: Any) -> list[Problem]:
    """Problems that make a document unusable as JSON: odd types, NaN, cycles, depth, alias bombs.

    Walks each distinct container once (YAML aliases share them), so it is linear in the size
    of the text even when the aliases would expand to billions of values.
    """
    problems: list[Problem] = []
    sizes: dict[int, tuple[int, int]] = {}  # id → (height, expanded number of values)
    open_ids: set[int] = set()
    stack: list[tuple[Any, str, int, bool]] = [(data, "", 1, False)]
    while stack:
        value, path, depth, done = stack.pop()
        if not isinstance(value, (dict, list)):
            if not isinstance(value, _SCALARS):
                problems.append(Problem(path, f"{kind_of(value)} {short(value)} is not JSON data"))
            elif isinstance(value, float) and not math.isfinite(value):
                problems.append(Problem(path, f"{value} is not a finite number"))
            continue
        key = id(value)
        if done:
            children = value.values() if isinstance(value, dict) else value
            height, count = 1, 1
            for child in children:
                child_height, child_count = sizes.get(id(child), (0, 1))
                height, count = max(height, child_height + 1), count + child_count
            sizes[key] = (height, count)
            open_ids.discard(key)
            if count > MAX_VALUES:
                return [Problem(path, f"expands to more than {MAX_VALUES} values (YAML aliases?)")]
            continue
        if key in open_ids:
            return [Problem(path, "contains itself (a recursive YAML alias)")]
        if key in sizes:
            if depth + sizes[key][0] - 1 > MAX_DEPTH:
                return [Problem(path, f"is nested more than {MAX_DEPTH} levels deep")]
            continue
        if depth > MAX_DEPTH:
            return [Problem(path, f"is nested more than {MAX_DEPTH} levels deep")]
        open_ids.add(key)
        stack.append((value, path, depth, True))
        if isinstance(value, list):
            stack.extend((v, join(path, i), depth + 1, False) for i, v in enumerate(value))
            continue
        for k, v in value.items():
            if not isinstance(k, str):
                problems.append(
                    Problem(join(path, str(k)), f"keys must be text, not {kind_of(k)}; quote it")
                )
            stack.append((v, join(path, str(k)), depth + 1, False))
        if len(problems) >= _MAX_SHAPE_PROBLEMS:
            return problems
    return problems
