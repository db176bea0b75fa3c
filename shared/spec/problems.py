"""Paths and messages of spec problems: pydantic's errors turned into `Problem(path, message)`."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from shared.errors import Problem

_TYPE_ERRORS = frozenset(
    (
        "string_type",
        "int_type",
        "float_type",
        "list_type",
        "dict_type",
        "bool_type",
        "int_parsing",
        "float_parsing",
        "bool_parsing",
        "int_from_float",
    )
)


def join(path: str, key: str | int) -> str:
    """`Tasks` + 0 → `Tasks[0]`; `Tasks[0]` + `Engine` → `Tasks[0].Engine`."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def problems_from(exc: ValidationError, prefix: str) -> list[Problem]:
    """Every error of a pydantic ValidationError, located under `prefix`."""
    out = []
    for err in exc.errors(include_url=False):
        path = prefix
        for part in err["loc"]:
            if part == "[key]":  # pydantic's marker for "the key itself is wrong"
                continue
            path = join(path, part) if isinstance(part, (str, int)) else path
        out.append(Problem(path, _message(err, path)))
    return out


def _message(err: Any, path: str) -> str:
    kind = err["type"]
    given = err.get("input")
    ctx = err.get("ctx") or {}
    if kind == "missing":
        return "is required"
    if kind == "value_error":
        return str(ctx["error"]) if "error" in ctx else str(err["msg"])
    if kind == "literal_error":
        return f"{given!r} is not one of {ctx.get('expected', '')}"
    if kind in ("too_short", "too_long") and path.endswith("Tasks"):
        count = len(given) if isinstance(given, list) else "?"
        return f"a job has exactly one task (as in Bacalhau); this one has {count}"
    if kind == "model_type" or kind == "model_attributes_type":
        return f"should be a mapping of fields, got {kind_of(given)} {short(given)}".rstrip()
    if kind in _TYPE_ERRORS:
        return f"{str(err['msg']).lower()}, got {kind_of(given)} {short(given)}".rstrip()
    return f"{err['msg']} (got {short(given)})"


def kind_of(value: Any) -> str:
    """How a YAML/JSON user would name the type of `value`."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "a boolean"
    for kind, name in ((dict, "a mapping"), (list, "a list"), (str, "text"), (int, "a number")):
        if isinstance(value, kind):
            return name
    return "a number" if isinstance(value, float) else type(value).__name__


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def dedupe(problems: list[Problem]) -> list[Problem]:
    seen: dict[tuple[str, str], Problem] = {}
    for p in problems:
        seen.setdefault((p.path, p.message), p)
    return list(seen.values())
