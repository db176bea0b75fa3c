"""Turns the user's text (YAML or JSON, maybe templated) into a validated JobSpec."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import yaml
from pydantic import ValidationError

from shared.errors import InvalidSpec, Problem
from shared.spec.models import JobSpec, SpecConfig, Task
from shared.spec.normalize import join, normalize_keys, normalize_task
from shared.spec.params import ENGINE_PARAMS, PUBLISHER_PARAMS, SOURCE_PARAMS, Params
from shared.template import render

MAX_SPEC_BYTES = 8 * 1024 * 1024


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
            raise InvalidSpec(
                f"the spec is not UTF-8 text ({exc.reason} at byte {exc.start})", source=source
            ) from None
    if len(text) > MAX_SPEC_BYTES:
        raise InvalidSpec(
            f"the spec is {len(text)} bytes; the limit is {MAX_SPEC_BYTES}", source=source
        )
    if "{{" in text:
        text = render(text, variables or {}, source=source)
    return spec_from_data(parse_document(text, source=source), source=source)


def parse_document(text: str, *, source: str = "") -> Any:
    """YAML (JSON is tried first, for its better error positions); empty documents refused."""
    stripped = text.strip()
    if not stripped:
        raise InvalidSpec("the spec is empty; a job needs at least Type and Tasks", source=source)
    if stripped.startswith("{"):
        try:
            return json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise InvalidSpec(
                [Problem(f"line {exc.lineno}, column {exc.colno}", f"invalid JSON: {exc.msg}")],
                source=source,
            ) from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise InvalidSpec(
            [Problem(where, f"invalid YAML: {exc.problem or exc}")], source=source
        ) from None
    except (yaml.YAMLError, RecursionError, ValueError) as exc:
        raise InvalidSpec(f"invalid YAML: {exc}", source=source) from None
    if not docs:
        raise InvalidSpec("the spec is empty; a job needs at least Type and Tasks", source=source)
    if len(docs) > 1:
        raise InvalidSpec(
            f"the file holds {len(docs)} YAML documents; submit one job per file", source=source
        )
    return docs[0]


def spec_from_data(data: Any, *, source: str = "") -> JobSpec:
    """Validate an already-parsed document (what an API client sends as JSON)."""
    if not isinstance(data, dict):
        raise InvalidSpec(f"the spec must be a mapping of fields, not {_kind(data)}", source=source)
    problems: list[Problem] = []
    data = normalize_keys(data, JobSpec, "", problems)
    tasks = data.get("Tasks")
    if isinstance(tasks, list):
        data["Tasks"] = [normalize_task(t, join("Tasks", i), problems) for i, t in enumerate(tasks)]
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as exc:
        problems.extend(_problems(exc, ""))
        raise InvalidSpec(_dedupe(problems), source=source) from None
    except RecursionError:
        raise InvalidSpec("the spec is nested too deeply", source=source) from None
    tasks = []
    for i, task in enumerate(spec.tasks):
        task, found = _check_params(task, join("Tasks", i))
        tasks.append(task)
        problems.extend(found)
    if problems:
        raise InvalidSpec(_dedupe(problems), source=source)
    return spec.model_copy(update={"tasks": tasks})


def typed_params(model: type[Params], params: Mapping[str, Any]) -> Params:
    """The typed view of a params block that already passed validation."""
    return model.model_validate(dict(params))


def _check_params(task: Task, path: str) -> tuple[Task, list[Problem]]:
    """Validate each known params block and replace it with its canonical form."""
    problems: list[Problem] = []
    if not task.engine.type:
        problems.append(
            Problem(join(join(path, "Engine"), "Type"), "is required (docker, wasm or noop)")
        )

    def canonical(config: SpecConfig, models: Mapping[str, type[Params]], where: str) -> SpecConfig:
        model = models.get(config.type.lower())
        if model is None:
            return config
        try:
            typed = model.model_validate(config.params)
        except ValidationError as exc:
            problems.extend(_problems(exc, where))
            return config
        params = typed.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        return config.model_copy(update={"params": params})

    engine = canonical(task.engine, ENGINE_PARAMS, join(join(path, "Engine"), "Params"))
    publisher = canonical(task.publisher, PUBLISHER_PARAMS, join(join(path, "Publisher"), "Params"))
    sources = [
        src.model_copy(
            update={
                "source": canonical(
                    src.source,
                    SOURCE_PARAMS,
                    join(join(join(path, "InputSources"), i), "Source.Params"),
                )
            }
        )
        for i, src in enumerate(task.input_sources)
    ]
    update = {"engine": engine, "publisher": publisher, "input_sources": sources}
    return task.model_copy(update=update), problems


def _problems(exc: ValidationError, prefix: str) -> list[Problem]:
    out = []
    for err in exc.errors(include_url=False):
        path = prefix
        for part in err["loc"]:
            path = join(path, part) if isinstance(part, (str, int)) else path
        out.append(Problem(path, _message(err)))
    return out


def _message(err: Any) -> str:
    kind = err["type"]
    given = err.get("input")
    if kind == "missing":
        return "is required"
    if kind == "value_error":
        return str(err["ctx"]["error"]) if "ctx" in err else err["msg"]
    if kind == "literal_error":
        return f"{given!r} is not one of {err['ctx']['expected']}"
    if kind in (
        "string_type",
        "int_type",
        "float_type",
        "list_type",
        "dict_type",
        "bool_type",
        "model_type",
        "int_parsing",
        "float_parsing",
        "bool_parsing",
    ):
        return f"{err['msg'].lower()}, got {_kind(given)} {_short(given)}".rstrip()
    return f"{err['msg']} (got {_short(given)})"


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {
        dict: "a mapping",
        list: "a list",
        str: "text",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }.get(type(value), type(value).__name__)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen: dict[tuple[str, str], Problem] = {}
    for p in problems:
        seen.setdefault((p.path, p.message), p)
    return list(seen.values())
