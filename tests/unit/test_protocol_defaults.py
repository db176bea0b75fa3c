"""docs/protocol.md against the code: its tables of left-out defaults, null view keys, spec keys
and Params, and its examples, are checked here so that a client written from the page alone
reads the wire as it is."""

from __future__ import annotations

import json
import re
import types
import typing
from pathlib import Path
from typing import Any

import msgspec
import pytest
from pydantic import BaseModel

from shared import wire
from shared.errors import InvalidSpec
from shared.spec import models, spec_from_data
from shared.spec.params import ENGINE_PARAMS, PUBLISHER_PARAMS, SOURCE_PARAMS

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
TEXT = DOC.read_text()

# What a missing key means when the doc does not list it: the zero of the key's type.
ZERO = {b"0", b"0.0", b'""', b"false", b"[]", b"{}"}


def after(marker: str) -> str:
    """The doc's text after `<!-- marker -->` (which must be there exactly once)."""
    tag = f"<!-- {marker} -->"
    assert TEXT.count(tag) == 1, f"docs/protocol.md should hold {tag} once"
    return TEXT.split(tag, 1)[1]


def table(marker: str) -> list[list[str]]:
    """The rows (cells, stripped) of the Markdown table right after the marker."""
    lines = after(marker).lstrip("\n").splitlines()
    rows = []
    for line in lines:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    assert len(rows) > 2, f"no table after {marker}"
    return rows[2:]  # past the header and the separator


def code(cell: str) -> str:
    match = re.fullmatch(r"`([^`]*)`", cell)
    assert match, f"{cell!r} should be one `code` span"
    return match.group(1)


def json_block(marker: str) -> Any:
    match = re.match(r"\s*```json\n(.*?)```", after(marker), re.S)
    assert match, f"no ```json block right after {marker}"
    return json.loads(match.group(1))


def wire_structs() -> list[type[msgspec.Struct]]:
    return [
        cls
        for cls in vars(wire).values()
        if isinstance(cls, type)
        and issubclass(cls, msgspec.Struct)
        and cls.__module__ == wire.__name__
        and cls is not wire.Wire
    ]


def default_of(field: msgspec.structs.FieldInfo) -> Any:
    if field.default is not msgspec.NODEFAULT:
        return field.default
    if field.default_factory is not msgspec.NODEFAULT:
        return field.default_factory()
    return msgspec.NODEFAULT


def test_every_left_out_default_that_is_not_zero_is_in_the_table() -> None:
    expected = set()
    for cls in wire_structs():
        if not cls.__struct_config__.omit_defaults:
            continue
        for field in msgspec.structs.fields(cls):
            default = default_of(field)
            if default is msgspec.NODEFAULT:
                continue
            encoded = msgspec.json.encode(default)
            if encoded not in ZERO:
                expected.add((cls.__name__, field.encode_name, encoded.decode()))
    documented = set()
    for message, key, value in table("defaults-table"):
        raw = code(value)
        documented.add((code(message), code(key), json.dumps(json.loads(raw))))
    expected = {(m, k, json.dumps(json.loads(v))) for m, k, v in expected}
    assert documented - expected == set(), "the doc lists defaults the code does not have"
    assert expected - documented == set(), "defaults missing from docs/protocol.md section 8"


def test_the_messages_that_always_carry_every_key() -> None:
    sentence = after("full-messages").split(".", 1)[0]
    documented = set(re.findall(r"`(\w+)`", sentence))
    full = {cls.__name__ for cls in wire_structs() if not cls.__struct_config__.omit_defaults}
    assert documented == full


def _nullable(hint: Any) -> bool:
    if hint is msgspec.Raw:  # any JSON: the code's default for these is null
        return True
    origin = typing.get_origin(hint)
    return origin in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)


def test_the_keys_of_full_messages_that_can_be_null() -> None:
    expected = set()
    for cls in wire_structs():
        if cls.__struct_config__.omit_defaults:
            continue
        hints = typing.get_type_hints(cls)
        for field in msgspec.structs.fields(cls):
            if _nullable(hints[field.name]):
                expected.add((cls.__name__, field.encode_name))
    documented = {(code(row[0]), code(row[1])) for row in table("nullable-table")}
    assert documented == expected


SPEC_BLOCKS: dict[str, type[BaseModel]] = {
    "`Engine`, `Publisher`, `InputSources[].Source`": models.SpecConfig,
    "`InputSources[]`": models.InputSource,
    "`ResultPaths[]`": models.ResultPath,
    "`Resources`": models.Resources,
    "`Network`": models.Network,
    "`Network.Ports[]`": models.Port,
    "`Timeouts`": models.Timeouts,
    "`Constraints[]`": models.Constraint,
}


def aliases(model: type[BaseModel]) -> set[str]:
    return {f.alias or name for name, f in model.model_fields.items()}


@pytest.mark.parametrize("model", [models.JobSpec, models.Task])
def test_spec_keys(model: type[BaseModel]) -> None:
    documented = {code(row[0]) for row in table(f"spec-keys: {model.__name__}")}
    assert documented == aliases(model)


def test_spec_blocks() -> None:
    rows = {row[0]: set(re.findall(r"`(\w+)`", row[1])) for row in table("spec-blocks")}
    assert set(rows) == set(SPEC_BLOCKS)
    for block, model in SPEC_BLOCKS.items():
        assert rows[block] == aliases(model), block


PARAMS = {
    **{f"engine {k}": m for k, m in ENGINE_PARAMS.items()},
    # the doc names sources as users write them (localDirectory); the code keys them lowercased
    **{f"source {k}": m for k, m in SOURCE_PARAMS.items()},
    **{f"publisher {k}": m for k, m in PUBLISHER_PARAMS.items() if m.model_fields},
}


def _params_marker(kind_name: str) -> str:
    kind, name = kind_name.split(" ")
    written = re.search(rf"<!-- params: {kind} ({re.escape(name)}) -->", TEXT, re.I)
    assert written, f"docs/protocol.md has no Params table for {kind_name}"
    return f"params: {kind} {written.group(1)}"


@pytest.mark.parametrize("kind_name", sorted(PARAMS))
def test_params_tables(kind_name: str) -> None:
    model = PARAMS[kind_name]
    rows = table(_params_marker(kind_name))
    documented = {code(row[0]): row[2] for row in rows}
    assert set(documented) == aliases(model)
    for name, field in model.model_fields.items():
        cell = documented[field.alias or name]
        if field.is_required():
            assert cell == "required", name
            continue
        default = field.default_factory() if field.default_factory else field.default
        assert json.loads(code(cell)) == default, name


def test_every_json_example_is_json() -> None:
    blocks = re.findall(r"```json\n(.*?)```", TEXT, re.S)
    assert len(blocks) > 10
    for block in blocks:
        json.loads(block)


def test_the_inline_wasm_example_is_a_valid_spec() -> None:
    spec = spec_from_data(json_block("example: wasm-inline"))
    assert spec.task.engine.type == "wasm"
    assert spec.task.input_sources[0].source.params["URL"].startswith("data:application/wasm")


def test_the_invalid_spec_example_is_what_the_code_answers() -> None:
    request = json_block("example: invalid-request")
    reply = json_block("example: invalid-reply")
    with pytest.raises(InvalidSpec) as caught:
        spec_from_data(request["Spec"])
    problems = caught.value.problems
    assert reply["Error"]["Code"] == caught.value.code
    assert str(caught.value) == reply["Error"]["Message"]
    assert [str(p) for p in problems] == reply["Error"]["Problems"]
    details = wire.ApiError(
        code="invalid",
        message="",
        details=[wire.ApiProblem(path=p.path, message=p.message) for p in problems],
    )
    assert msgspec.to_builtins(details)["Details"] == reply["Error"]["Details"]
