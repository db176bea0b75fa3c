"""Case-insensitive key matching against the spec models, with legacy forms rewritten."""

from __future__ import annotations

import difflib
import functools
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from shared.errors import Problem
from shared.spec.models import InputSource
from shared.spec.params import (
    ENGINE_PARAMS,
    PUBLISHER_PARAMS,
    SOURCE_ALIASES,
    SOURCE_PARAMS,
    Params,
)
from shared.spec.problems import join, problems_from

LEGACY_ENTRY_TARGET = "/shoal/entry-module.wasm"


@functools.cache  # the models are fixed: look at their fields once
def _aliases(model: type[BaseModel]) -> dict[str, str]:
    return {(f.alias or name).lower(): f.alias or name for name, f in model.model_fields.items()}


@functools.cache
def _nested(model: type[BaseModel], alias: str) -> tuple[type[BaseModel] | None, bool]:
    """The spec model a field holds (and whether it is a list of them), if any."""
    for name, field in model.model_fields.items():
        if (field.alias or name) != alias:
            continue
        annotation = field.annotation
        is_list = typing.get_origin(annotation) is list
        if is_list:
            annotation = typing.get_args(annotation)[0]
        if typing.get_origin(annotation) in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = args[0] if len(args) == 1 else None
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return annotation, is_list
    return None, False


def normalize_keys(data: Any, model: type[BaseModel], path: str, problems: list[Problem]) -> Any:
    """Rename keys to the model's canonical casing, recursing into nested models.

    Unknown keys become problems (with the closest valid name) and are dropped, so that
    pydantic reports the remaining errors instead of a cascade of "extra field" noise.
    """
    if not isinstance(data, dict):
        return data
    known = _aliases(model)
    out: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = str(raw_key)
        canonical = known.get(key.lower())
        if canonical is None:
            problems.append(Problem(join(path, key), _unknown(key, sorted(set(known.values())))))
            continue
        if canonical in out:
            problems.append(
                Problem(join(path, key), f"{canonical} is given twice (keys are case-insensitive)")
            )
            continue
        child, is_list = _nested(model, canonical)
        if child is not None:
            if is_list and isinstance(value, list):
                value = [
                    normalize_keys(v, child, join(join(path, canonical), i), problems)
                    for i, v in enumerate(value)
                ]
            elif not is_list:
                value = normalize_keys(value, child, join(path, canonical), problems)
        out[canonical] = value
    return out


def _unknown(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key.lower(), [v.lower() for v in valid], n=1, cutoff=0.6)
    hint = ""
    if close:
        hint = f"; did you mean {next(v for v in valid if v.lower() == close[0])}?"
    return f"unknown field {key!r}{hint} (valid: {', '.join(valid)})"


def normalize_task(task: Any, path: str, problems: list[Problem]) -> Any:
    """Canonical type names, param keys and params for the engine, publisher and input sources.

    Params of the types Shoal knows are validated here (so that their problems are reported
    together with every other problem of the spec) and replaced by their canonical form.
    """
    if not isinstance(task, dict):
        return task
    task = dict(task)
    sources = task.get("InputSources")
    if isinstance(sources, list):
        task["InputSources"] = [
            _source(s, join(join(path, "InputSources"), i), problems) for i, s in enumerate(sources)
        ]
    engine = task.get("Engine")
    if isinstance(engine, dict):
        where = join(path, "Engine")
        engine = _canonical(engine, _ENGINE_NAMES, ENGINE_PARAMS, where, problems)
        engine, moved = _legacy_wasm(engine, where, problems)
        if engine.get("Type") in (None, ""):
            problems.append(Problem(join(where, "Type"), "is required (docker, wasm or noop)"))
        task["Engine"] = _validated(engine, ENGINE_PARAMS, where, problems)
        if moved:
            sources = task.get("InputSources")
            sources = [] if sources is None else sources
            task["InputSources"] = [*sources, *moved] if isinstance(sources, list) else sources
    publisher = task.get("Publisher")
    if isinstance(publisher, dict):
        where = join(path, "Publisher")
        publisher = _canonical(publisher, _PUBLISHER_NAMES, PUBLISHER_PARAMS, where, problems)
        task["Publisher"] = _validated(publisher, PUBLISHER_PARAMS, where, problems)
    return task


_ENGINE_NAMES = {k: k for k in ENGINE_PARAMS}
_PUBLISHER_NAMES = {k: k for k in PUBLISHER_PARAMS}


def _source(item: Any, path: str, problems: list[Problem]) -> Any:
    if not isinstance(item, dict) or not isinstance(item.get("Source"), dict):
        return item
    where = join(path, "Source")
    source = _canonical(item["Source"], SOURCE_ALIASES, SOURCE_PARAMS, where, problems)
    return {**item, "Source": _validated(source, SOURCE_PARAMS, where, problems)}


def _canonical(
    config: dict[str, Any],
    names: dict[str, str],
    params_by_type: dict[str, type[Params]],
    path: str,
    problems: list[Problem],
) -> dict[str, Any]:
    """Canonicalise `Type`, and the `Params` keys when the type is one Shoal knows.

    Unknown types pass: which engines and publishers exist is decided by the nodes, so an
    unknown type is a scheduling-time error ("no node supports engine flibble").
    """
    kind = config.get("Type")
    if not isinstance(kind, str):
        return config
    canonical = names.get(kind.strip().lower(), kind.strip())
    out = {**config, "Type": canonical}
    params_model = params_by_type.get(canonical.lower())
    params = config.get("Params")
    if params_model is not None and isinstance(params, dict):
        out["Params"] = normalize_keys(params, params_model, join(path, "Params"), problems)
    return out


def _validated(
    config: dict[str, Any],
    params_by_type: dict[str, type[Params]],
    path: str,
    problems: list[Problem],
) -> dict[str, Any]:
    """Validate the params of a known type; on success replace them with their canonical form."""
    kind = config.get("Type")
    model = params_by_type.get(kind.lower()) if isinstance(kind, str) else None
    params = config.get("Params")
    if model is None or not (params is None or isinstance(params, dict)):
        return config
    try:
        typed = model.model_validate(params or {})
    except ValidationError as exc:
        problems.extend(problems_from(exc, join(path, "Params")))
        return config
    return {**config, "Params": typed.model_dump(mode="json", by_alias=True, exclude_defaults=True)}


def _legacy_wasm(
    engine: dict[str, Any], path: str, problems: list[Problem]
) -> tuple[dict[str, Any], list[Any]]:
    """Bacalhau < 1.3 gave the wasm EntryModule as an InputSource; move it to InputSources.

    The module is mounted at the legacy object's Target (LEGACY_ENTRY_TARGET if that is empty)
    and EntryModule becomes that path. Problems are reported where the user wrote them.
    """
    params = engine.get("Params")
    if engine.get("Type") != "wasm" or not isinstance(params, dict):
        return engine, []
    entry = params.get("EntryModule")
    if not isinstance(entry, dict):
        return engine, []
    where = join(join(path, "Params"), "EntryModule")
    moved = normalize_keys(entry, InputSource, where, problems)
    target = moved.get("Target")
    if target in (None, ""):
        target = LEGACY_ENTRY_TARGET
    engine = {**engine, "Params": {**params, "EntryModule": target}}
    if not isinstance(moved.get("Source"), dict):
        problems.append(Problem(where, "a legacy EntryModule object needs a Source {Type, Params}"))
        return engine, []
    alias = moved.get("Alias")
    moved = {**moved, "Target": target, "Alias": "" if alias is None else alias}
    return engine, [_source(moved, where, problems)]
