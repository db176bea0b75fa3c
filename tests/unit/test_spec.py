"""Validation rules of the user-facing job spec (shared.spec): defaults, casing, units, errors."""

from __future__ import annotations

import copy
import json
import pickle
from typing import Any

import msgspec
import pytest
import yaml

from shared.errors import InvalidSpec, Problem, ShoalError
from shared.spec import JobSpec, dump_yaml, load_spec, parse_document, spec_from_data
from shared.spec.loader import MAX_DEPTH, MAX_SPEC_BYTES
from shared.spec.normalize import LEGACY_ENTRY_TARGET
from shared.spec.params import DockerParams, NoopParams, S3Publisher, WasmParams

# ---- helpers ------------------------------------------------------------------------------------

DOCKER_TASK = "Tasks:\n  - Engine:\n      Type: docker\n      Params:\n        Image: busybox\n"


def job(**extra: Any) -> dict[str, Any]:
    """A minimal valid job as data; `extra` overrides top-level fields."""
    data: dict[str, Any] = {"Type": "batch", "Tasks": [{"Engine": {"Type": "noop"}}]}
    data.update(extra)
    return data


def task_job(**task: Any) -> dict[str, Any]:
    """A minimal job whose single task has the given fields (Engine noop unless given)."""
    return job(Tasks=[{"Engine": {"Type": "noop"}, **task}])


def problems(
    source: str | dict[str, Any], variables: dict[str, str] | None = None
) -> list[Problem]:
    with pytest.raises(InvalidSpec) as info:
        if isinstance(source, str):
            load_spec(source, variables)
        else:
            spec_from_data(source)
    assert info.value.problems, "InvalidSpec without problems"
    return info.value.problems


def by_path(found: list[Problem]) -> dict[str, str]:
    return {p.path: p.message for p in found}


def one_problem(source: str | dict[str, Any], path: str) -> str:
    found = problems(source)
    assert [p.path for p in found] == [path], found
    return found[0].message


# ---- parsing and defaults -----------------------------------------------------------------------


def test_minimal_yaml_gets_bacalhau_defaults() -> None:
    spec = load_spec(DOCKER_TASK)
    assert spec.type == "batch"
    assert spec.namespace == "default"
    assert spec.count == 1
    assert spec.priority == 0
    assert spec.name == ""
    assert spec.id is None
    assert spec.task.name == "main"
    assert spec.task.publisher.type == ""
    assert spec.task.network.type == "None"
    assert spec.task.timeouts.execution_timeout == 0
    assert spec.task.resources.cpu_millis == 0
    assert spec.task.resources.memory_bytes == 0


@pytest.mark.parametrize("kind", ["batch", "service"])
def test_count_defaults_to_one_for_batch_and_service(kind: str) -> None:
    assert spec_from_data(job(Type=kind)).count == 1


@pytest.mark.parametrize("kind", ["ops", "daemon"])
def test_no_count_for_ops_and_daemon(kind: str) -> None:
    spec = spec_from_data(job(Type=kind))
    assert spec.count is None
    assert "Count" not in spec.dump()


@pytest.mark.parametrize("kind", ["batch", "BATCH", " Batch ", "ops", "Daemon", "SERVICE"])
def test_type_is_case_insensitive(kind: str) -> None:
    assert spec_from_data(job(Type=kind)).type == kind.strip().lower()


@pytest.mark.parametrize("value", [None, ""])
def test_missing_type_means_batch(value: str | None) -> None:
    assert spec_from_data(job(Type=value)).type == "batch"


def test_unknown_type_is_refused() -> None:
    message = one_problem(job(Type="cron"), "Type")
    assert "'cron'" in message and "batch" in message and "daemon" in message


def test_id_is_not_set_by_the_parser() -> None:
    assert spec_from_data(job()).id is None
    assert "ID" not in spec_from_data(job()).dump()


def test_empty_namespace_and_task_name_get_defaults() -> None:
    spec = spec_from_data(job(Namespace="", Tasks=[{"Name": "", "Engine": {"Type": "noop"}}]))
    assert spec.namespace == "default"
    assert spec.task.name == "main"


def test_keys_are_case_insensitive_at_every_level() -> None:
    text = """
    NAME: shouty
    type: Ops
    namespace: team-a
    CONSTRAINTS: [{KEY: region, operator: "=", VALUES: [eu]}]
    tasks:
      - NAME: t
        ENGINE: {TYPE: Docker, PARAMS: {IMAGE: alpine, entrypoint: [sh], PARAMETERS: [-c, "true"]}}
        publisher: {type: S3, params: {bucket: b, KEY: k}}
        inputsources:
          - {SOURCE: {type: LOCAL, params: {sourcepath: /data, READWRITE: true}}, target: /in}
        resultpaths: [{name: out, PATH: /out}]
        resources: {cpu: 250m, MEMORY: 1Gb, gpu: 1}
        network: {TYPE: http, domains: [example.com]}
        timeouts: {executiontimeout: 30s, QUEUETIMEOUT: 5m}
    """
    spec = load_spec(text.replace("\n    ", "\n"))
    assert spec.name == "shouty"
    assert spec.type == "ops"
    assert spec.namespace == "team-a"
    assert spec.constraints[0].key == "region"
    task = spec.task
    assert task.name == "t"
    assert task.engine.type == "docker"
    assert task.engine.params == {
        "Image": "alpine",
        "Entrypoint": ["sh"],
        "Parameters": ["-c", "true"],
    }
    assert task.publisher.type == "s3"
    assert task.publisher.params == {"Bucket": "b", "Key": "k"}
    source = task.input_sources[0]
    assert source.source.type == "localDirectory"
    assert source.source.params == {"SourcePath": "/data", "ReadWrite": True}
    assert task.result_paths[0].path == "/out"
    assert (task.resources.cpu_millis, task.resources.memory_bytes, task.resources.gpus) == (
        250,
        10**9,
        1,
    )
    assert task.network.type == "HTTP"
    assert task.timeouts.execution_timeout == 30
    assert task.timeouts.queue_timeout == 300


def test_json_and_yaml_give_the_same_spec() -> None:
    data = job(
        Name="same",
        Count=3,
        Labels={"a": "b"},
        Tasks=[
            {
                "Engine": {"Type": "docker", "Params": {"Image": "x", "Parameters": ["a", "b"]}},
                "Resources": {"CPU": "0.5", "Memory": "512Mi"},
            }
        ],
    )
    from_json = load_spec(json.dumps(data, indent=2))
    from_yaml = load_spec(json.dumps(data).replace('"', "'"))  # flow YAML, not JSON
    assert from_json == from_yaml == spec_from_data(data)


def test_dump_is_canonical_and_round_trips() -> None:
    spec = load_spec(DOCKER_TASK)
    dumped = spec.dump()
    assert list(dumped)[:3] == ["Name", "Type", "Namespace"]
    assert dumped["Tasks"][0]["Engine"] == {"Type": "docker", "Params": {"Image": "busybox"}}
    assert spec_from_data(dumped) == spec
    assert spec_from_data(json.loads(json.dumps(dumped))) == spec


def test_a_key_given_twice_in_different_case_is_refused() -> None:
    found = by_path(
        problems({"Type": "batch", "type": "ops", "Tasks": [{"Engine": {"Type": "noop"}}]})
    )
    assert "given twice" in found["type"]


def test_a_key_given_twice_in_yaml_is_refused() -> None:
    (found,) = problems("Count: 2\nCount: 3\n" + DOCKER_TASK)
    assert "duplicate key 'Count'" in found.message
    assert found.path.startswith("line 2")


def test_yaml_merge_keys_still_work() -> None:
    text = (
        "Tasks:\n  - Engine:\n      Type: docker\n      Params:\n"
        "        <<: {Image: busybox, WorkingDirectory: /w}\n        WorkingDirectory: /x\n"
    )
    assert load_spec(text).task.engine.params == {"Image": "busybox", "WorkingDirectory": "/x"}


# ---- YAML scalars as users mean them ------------------------------------------------------------


def test_yaml_scalars_keep_their_text_in_text_fields() -> None:
    text = """
    Tasks:
      - Engine:
          Type: docker
          Params:
            Image: x
            Parameters: [yes, on, no, 010, 1.10, 12:30, 2024-01-01, 0x1F, 1e3, "=", =, 1_000, null]
    """
    params = load_spec(text.replace("\n    ", "\n")).task.engine.params
    assert params["Parameters"] == [
        "yes",
        "on",
        "no",
        "010",
        "1.10",
        "12:30",
        "2024-01-01",
        "0x1F",
        "1e3",
        "=",
        "=",
        "1_000",
        "",
    ]


def test_dump_yaml_quotes_whatever_a_yaml_reader_would_retype() -> None:
    data = {
        "text": [
            "1e3",
            "0o17",
            "010",
            "yes",
            "No",
            "12:30",
            "2024-01-01",
            "true",
            "null",
            "=",
            "~",
        ],
        "typed": [1, 1.5, True, None],
    }
    text = dump_yaml(data)
    assert parse_document(text) == data
    assert yaml.safe_load(text) == data
    assert text.startswith("text:")


def test_parsed_numbers_dump_and_copy_as_written() -> None:
    data = parse_document("a: [010, 1.10, .inf, 0x1F]")
    assert yaml.safe_dump(data) == "a:\n- 010\n- 1.10\n- .inf\n- 0x1F\n"
    assert [str(v) for v in copy.deepcopy(data)["a"]] == ["010", "1.10", ".inf", "0x1F"]
    assert [str(v) for v in pickle.loads(pickle.dumps(data))["a"]] == [
        "010",
        "1.10",
        ".inf",
        "0x1F",
    ]
    assert json.dumps(data) == '{"a": [10, 1.1, Infinity, 31]}'


def test_opaque_params_hold_plain_numbers() -> None:
    spec = load_spec("Tasks: [{Engine: {Type: flibble, Params: {a: [010, {b: 1.10}]}}}]")
    params = spec.task.engine.params
    assert params == {"a": [10, {"b": 1.1}]}
    assert type(params["a"][0]) is int and type(params["a"][1]["b"]) is float
    assert msgspec.json.encode(params) == b'{"a":[10,{"b":1.1}]}'


def test_true_and_false_are_booleans() -> None:
    source = (
        "{Source: {Type: localDirectory, Params: {SourcePath: /d, ReadWrite: true}}, Target: /d}"
    )
    text = "Tasks: [{Engine: {Type: noop}, InputSources: [" + source + "]}]"
    assert load_spec(text).task.input_sources[0].source.params["ReadWrite"] is True


def test_numbers_are_accepted_as_text() -> None:
    text = """
    Name: 2024
    Tasks:
      - Name: 1.10
        Env: {A: 010, B: 1.50, C: true, D: ~}
        Engine: {Type: docker, Params: {Image: x, Meta: {a: 1.0}}}
        Publisher: {Type: s3, Params: {Bucket: 2024, Key: 010}}
    """
    spec = load_spec(text.replace("\n    ", "\n"))
    assert spec.name == "2024"
    assert spec.task.name == "1.10"
    assert spec.task.env == {"A": "010", "B": "1.50", "C": "true", "D": ""}
    assert spec.task.engine.params["Meta"] == {"a": "1.0"}
    assert spec.task.publisher.params == {"Bucket": "2024", "Key": "010"}


def test_numbers_from_json_are_accepted_as_text() -> None:
    data = task_job(Env={"PORT": 8080, "RATIO": 0.5}, Meta={"n": 1})
    data["Labels"] = {"tier": 2}
    spec = spec_from_data(data)
    assert spec.task.env == {"PORT": "8080", "RATIO": "0.5"}
    assert spec.task.meta == {"n": "1"}
    assert spec.labels == {"tier": "2"}


# ---- documents that are not specs ---------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "   \n\t", "---\n", "# only a comment\n", "---\n...\n", b""])
def test_empty_documents_are_refused(text: str | bytes) -> None:
    with pytest.raises(InvalidSpec, match="empty"):
        load_spec(text)


def test_several_yaml_documents_are_refused() -> None:
    with pytest.raises(InvalidSpec, match="2 YAML documents"):
        load_spec(DOCKER_TASK + "---\n" + DOCKER_TASK)


@pytest.mark.parametrize(
    ("text", "kind"),
    [("- a\n- b\n", "a list"), ("hello\n", "text"), ("42\n", "a number"), ("[1, 2]", "a list")],
)
def test_a_document_that_is_not_a_mapping_is_refused(text: str, kind: str) -> None:
    with pytest.raises(InvalidSpec, match=f"must be a mapping of fields, not {kind}"):
        load_spec(text)


def test_invalid_yaml_names_the_position() -> None:
    (found,) = problems("Type: batch\nTasks: [\n  - a: b: c\n")
    assert found.path.startswith("line ")
    assert "invalid YAML" in found.message


def test_invalid_json_names_the_position() -> None:
    (found,) = problems('{\n  "Type": "batch",\n  "Tasks": [}\n')
    assert found.path == "line 3, column 13"
    assert "invalid JSON" in found.message


def test_non_utf8_bytes_are_refused() -> None:
    with pytest.raises(InvalidSpec, match="not UTF-8"):
        load_spec(b"Name: \xff\xfe\n")


def test_utf8_bytes_and_a_bom_are_accepted() -> None:
    assert load_spec(("\ufeff" + DOCKER_TASK).encode()).task.engine.type == "docker"
    assert load_spec("\ufeff" + json.dumps(job())).task.engine.type == "noop"


def test_oversized_specs_are_refused() -> None:
    with pytest.raises(InvalidSpec, match="limit"):
        load_spec("#" * (MAX_SPEC_BYTES + 1))


def test_deep_nesting_is_refused_not_crashed() -> None:
    deep: Any = "x"
    for _ in range(MAX_DEPTH + 5):
        deep = {"a": deep}
    data = job(Tasks=[{"Engine": {"Type": "flibble", "Params": deep}}])
    message = one_problem(data, "Tasks[0].Engine.Params" + ".a" * (MAX_DEPTH - 4))
    assert "nested" in message
    block = "".join(" " * i + "a:\n" for i in range(2_000)) + " " * 2_000 + "x\n"
    too_deep = (
        '{"a":' * 100_000 + "1" + "}" * 100_000,  # JSON: too deep for Python's parser
        "a: " + "[" * 5_000 + "]" * 5_000,  # YAML flow: too deep for libyaml
        block,  # YAML block: too deep for libyaml
        "a: " + "[" * 100 + "]" * 100,  # read by the parser, refused by the shape check
    )
    for text in too_deep:
        # Shoal's own words whichever layer refuses it, never the parser's.
        with pytest.raises(InvalidSpec, match=r"nested more than 64 levels deep") as info:
            load_spec(text)
        assert "invalid" not in str(info.value)


def test_nesting_below_the_limit_is_fine() -> None:
    deep: Any = "x"
    for _ in range(MAX_DEPTH - 6):
        deep = {"a": deep}
    spec = spec_from_data(job(Tasks=[{"Engine": {"Type": "flibble", "Params": deep}}]))
    assert spec_from_data(spec.dump()) == spec


def test_yaml_alias_bombs_are_refused_quickly() -> None:
    text = (
        "Tasks:\n- Engine:\n    Type: flibble\n    Params:\n      l0: &l0 [x,x,x,x,x,x,x,x,x,x]\n"
    )
    for i in range(1, 10):  # 10**10 values once expanded
        text += f"      l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 10) + "]\n"
    with pytest.raises(InvalidSpec, match="expands to more than"):
        load_spec(text)


def test_small_yaml_aliases_are_fine() -> None:
    text = "Tasks:\n- Engine:\n    Type: flibble\n    Params:\n      a: &a [x, y]\n      b: *a\n"
    assert load_spec(text).task.engine.params == {"a": ["x", "y"], "b": ["x", "y"]}


def test_recursive_yaml_aliases_are_refused() -> None:
    text = "Tasks:\n- Engine:\n    Type: flibble\n    Params: &p\n      self: *p\n"
    assert "contains itself" in one_problem(text, "Tasks[0].Engine.Params.self")


def test_values_that_are_not_json_data_are_refused() -> None:
    text = "Tasks:\n- Engine:\n    Type: flibble\n    Params:\n"
    text += "      a: !!binary aGVsbG8=\n      b: !!set {x}\n"
    found = by_path(problems(text))
    assert set(found) == {"Tasks[0].Engine.Params.a", "Tasks[0].Engine.Params.b"}
    assert all("is not JSON data" in m for m in found.values())


def test_keys_that_are_not_text_are_refused() -> None:
    text = "Tasks:\n- Engine:\n    Type: flibble\n    Params: {~: 1, true: 2, 3: 4}\n"
    found = by_path(problems(text))
    assert set(found) == {
        "Tasks[0].Engine.Params.None",
        "Tasks[0].Engine.Params.True",
        "Tasks[0].Engine.Params.3",
    }
    assert all("keys must be text" in m for m in found.values())


# ---- templating ---------------------------------------------------------------------------------


def test_template_variables_are_rendered_before_parsing() -> None:
    text = (
        "Name: {{.name}}\nCount: {{.count}}\nTasks:\n  - Engine:\n      Type: docker\n"
        '      Params:\n        Image: {{index . "image"}}\n'
        '        Parameters: [{{or (index . "extra") "none"}}, {{or .flag "off"}}]\n'
    )
    spec = load_spec(text, {"name": "templated", "count": "3", "image": "alpine", "flag": "on"})
    assert spec.name == "templated"
    assert spec.count == 3
    assert spec.task.engine.params == {"Image": "alpine", "Parameters": ["none", "on"]}


def test_missing_template_variables_are_all_reported_by_name() -> None:
    text = "Name: {{.first}}-{{.second}}\n" + DOCKER_TASK
    found = problems(text, {})
    assert [p.path for p in found] == ["line 1, column 7", "line 1, column 18"]
    assert 'variable "first"' in found[0].message
    assert 'variable "second"' in found[1].message
    assert "-V first=VALUE" in found[0].message


def test_or_with_index_needs_no_variable() -> None:
    text = 'Name: {{or (index . "maybe") "fallback"}}\n' + DOCKER_TASK
    assert load_spec(text).name == "fallback"
    assert load_spec(text, {"maybe": "given"}).name == "given"


def test_text_without_braces_ignores_variables() -> None:
    assert load_spec(DOCKER_TASK, {"unused": "x"}).task.engine.params == {"Image": "busybox"}


# ---- unknown fields -----------------------------------------------------------------------------


def test_unknown_task_field_names_the_closest_valid_one() -> None:
    message = one_problem(task_job(Resourcse={"CPU": "1"}), "Tasks[0].Resourcse")
    assert "unknown field 'Resourcse'" in message
    assert "did you mean Resources?" in message


@pytest.mark.parametrize(
    ("data", "path", "hint"),
    [
        (job(Nmae="x"), "Nmae", "Name"),
        (
            job(Constraints=[{"Key": "a", "Operater": "exists"}]),
            "Constraints[0].Operater",
            "Operator",
        ),
        (
            task_job(Timeouts={"ExecutionTimout": 5}),
            "Tasks[0].Timeouts.ExecutionTimout",
            "ExecutionTimeout",
        ),
        (task_job(Resources={"Memroy": "1Gb"}), "Tasks[0].Resources.Memroy", "Memory"),
        (task_job(Network={"Tpye": "Full"}), "Tasks[0].Network.Tpye", "Type"),
        (
            task_job(ResultPaths=[{"Name": "o", "Path": "/o", "Pth": "/p"}]),
            "Tasks[0].ResultPaths[0].Pth",
            "Path",
        ),
        (
            job(Tasks=[{"Engine": {"Type": "docker", "Params": {"Imagee": "x", "Image": "x"}}}]),
            "Tasks[0].Engine.Params.Imagee",
            "Image",
        ),
        (
            job(Tasks=[{"Engine": {"Type": "docker", "Parms": {}}}]),
            "Tasks[0].Engine.Parms",
            "Params",
        ),
        (
            task_job(Publisher={"Type": "s3", "Params": {"Bucket": "b", "Regoin": "eu"}}),
            "Tasks[0].Publisher.Params.Regoin",
            "Region",
        ),
        (
            task_job(
                InputSources=[{"Source": {"Type": "s3", "Params": {"Bucket": "b"}}, "Targt": "/x"}]
            ),
            "Tasks[0].InputSources[0].Targt",
            "Target",
        ),
    ],
)
def test_unknown_fields_are_refused_with_a_suggestion(
    data: dict[str, Any], path: str, hint: str
) -> None:
    found = by_path(problems(data))
    assert path in found, found
    assert f"did you mean {hint}?" in found[path]


def test_unknown_field_without_a_close_match_lists_the_valid_ones() -> None:
    message = one_problem(job(Zzz=1), "Zzz")
    assert "did you mean" not in message
    assert "valid: " in message and "Tasks" in message


def test_params_of_unknown_engines_are_kept_as_given() -> None:
    spec = spec_from_data(
        job(Tasks=[{"Engine": {"Type": "Flibble", "Params": {"someKey": [1, {"a": None}]}}}])
    )
    assert spec.task.engine.type == "Flibble"
    assert spec.task.engine.params == {"someKey": [1, {"a": None}]}


# ---- tasks --------------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, 2, 3])
def test_exactly_one_task(count: int) -> None:
    message = one_problem(job(Tasks=[{"Engine": {"Type": "noop"}}] * count), "Tasks")
    assert "exactly one task" in message and str(count) in message


@pytest.mark.parametrize(
    ("tasks", "kind"), [("x", "text"), ({"Engine": {}}, "a mapping"), (None, "nothing")]
)
def test_tasks_must_be_a_list(tasks: Any, kind: str) -> None:
    assert kind in one_problem(job(Tasks=tasks), "Tasks")


def test_tasks_are_required() -> None:
    assert one_problem({"Type": "batch"}, "Tasks") == "is required"


def test_engine_is_required() -> None:
    assert one_problem(job(Tasks=[{"Name": "x"}]), "Tasks[0].Engine") == "is required"


@pytest.mark.parametrize("engine", [{}, {"Type": ""}, {"Type": None, "Params": {}}, {"Type": "  "}])
def test_engine_type_is_required(engine: dict[str, Any]) -> None:
    assert "is required" in one_problem(job(Tasks=[{"Engine": engine}]), "Tasks[0].Engine.Type")


def test_engine_must_be_a_mapping() -> None:
    assert "mapping" in one_problem(job(Tasks=[{"Engine": ["docker"]}]), "Tasks[0].Engine")


# ---- engine params ------------------------------------------------------------------------------


def test_docker_needs_an_image() -> None:
    assert (
        one_problem(job(Tasks=[{"Engine": {"Type": "docker"}}]), "Tasks[0].Engine.Params.Image")
        == "is required"
    )
    found = problems(job(Tasks=[{"Engine": {"Type": "docker", "Params": {"Image": ""}}}]))
    assert [p.path for p in found] == ["Tasks[0].Engine.Params.Image"]


def test_wasm_needs_an_entry_module() -> None:
    path = "Tasks[0].Engine.Params.EntryModule"
    assert (
        one_problem(job(Tasks=[{"Engine": {"Type": "wasm", "Params": {}}}]), path) == "is required"
    )


def test_noop_needs_nothing_and_checks_what_it_gets() -> None:
    assert spec_from_data(job()).task.engine.params == {}
    found = by_path(
        problems(
            job(Tasks=[{"Engine": {"Type": "noop", "Params": {"ExitCode": 300, "Sleep": "-1"}}}])
        )
    )
    assert set(found) == {"Tasks[0].Engine.Params.ExitCode", "Tasks[0].Engine.Params.Sleep"}
    noop = spec_from_data(job(Tasks=[{"Engine": {"Type": "noop", "Params": {"sleep": "Forever"}}}]))
    assert NoopParams.model_validate(noop.task.engine.params).forever


def test_engine_params_are_canonical_and_typed_views_work() -> None:
    text = """
    Tasks:
      - Engine:
          type: DOCKER
          params:
            image: alpine
            entrypoint: /bin/sh
            parameters: [-c, 5, true]
            workingdirectory: ""
            environmentvariables: ["A=1", "B = two words ", "C=x=y", "D="]
    """
    spec = load_spec(text.replace("\n    ", "\n"))
    params = spec.task.engine.params
    assert params == {
        "Image": "alpine",
        "Entrypoint": ["/bin/sh"],
        "Parameters": ["-c", "5", "true"],
        "EnvironmentVariables": ["A=1", "B = two words ", "C=x=y", "D="],
    }
    docker = DockerParams.model_validate(params)
    assert docker.env() == {"A": "1", "B": "two words", "C": "x=y", "D": ""}


def test_docker_env_accepts_spaced_pairs_like_the_seeds() -> None:
    docker = DockerParams.model_validate(
        {
            "Image": "x",
            "EnvironmentVariables": ["DEFAULT_USER_NAME = root", "API_KEY = none", "K=V"],
        }
    )
    assert docker.env() == {"DEFAULT_USER_NAME": "root", "API_KEY": "none", "K": "V"}


@pytest.mark.parametrize("item", ["NOEQUALS", "=value", " = value"])
def test_docker_env_refuses_items_without_a_key(item: str) -> None:
    data = job(
        Tasks=[
            {"Engine": {"Type": "docker", "Params": {"Image": "x", "EnvironmentVariables": [item]}}}
        ]
    )
    assert "KEY=VALUE" in one_problem(data, "Tasks[0].Engine.Params.EnvironmentVariables")


def test_wasm_params_accept_both_env_forms() -> None:
    as_map = WasmParams.model_validate({"EntryModule": "/m.wasm", "EnvironmentVariables": {"A": 1}})
    as_list = WasmParams.model_validate(
        {"EntryModule": "/m.wasm", "EnvironmentVariables": ["A = 1"]}
    )
    assert as_map.environment_variables == as_list.environment_variables == {"A": "1"}
    assert as_map.entrypoint == "_start"
    for item in ("oops", "=x", " = x"):
        with pytest.raises(ValueError, match=f"{item!r} is not KEY=VALUE"):
            WasmParams.model_validate({"EntryModule": "/m.wasm", "EnvironmentVariables": [item]})


def test_legacy_wasm_entry_module_becomes_an_input_source() -> None:
    text = """
    Tasks:
      - Engine:
          Type: wasm
          Params:
            entryModule:
              source: {type: urlDownload, params: {url: "https://example.com/m.wasm"}}
              target: /app/m.wasm
            Parameters: [a]
    """
    spec = load_spec(text.replace("\n    ", "\n"))
    assert spec.task.engine.params == {"EntryModule": "/app/m.wasm", "Parameters": ["a"]}
    (source,) = spec.task.input_sources
    assert source.target == "/app/m.wasm"
    assert source.source.type == "urlDownload"
    assert source.source.params == {"URL": "https://example.com/m.wasm"}
    assert spec_from_data(spec.dump()) == spec


def test_legacy_wasm_without_target_gets_the_default_one() -> None:
    entry = {"Source": {"Type": "inline", "Params": {"URL": "data:,x"}}, "Target": ""}
    spec = spec_from_data(
        job(Tasks=[{"Engine": {"Type": "wasm", "Params": {"EntryModule": entry}}}])
    )
    assert spec.task.engine.params["EntryModule"] == LEGACY_ENTRY_TARGET
    assert [s.target for s in spec.task.input_sources] == [LEGACY_ENTRY_TARGET]


def test_legacy_wasm_problems_name_the_legacy_location() -> None:
    where = "Tasks[0].Engine.Params.EntryModule"
    entry = {"Source": {"Type": "inline", "Params": {"URL": "http://not-data"}}}
    data = job(Tasks=[{"Engine": {"Type": "wasm", "Params": {"EntryModule": entry}}}])
    assert "data: URL" in one_problem(data, where + ".Source.Params.URL")
    no_source = job(
        Tasks=[{"Engine": {"Type": "wasm", "Params": {"EntryModule": {"Target": "/m"}}}}]
    )
    assert "needs a Source" in one_problem(no_source, where)


# ---- publishers and input sources ---------------------------------------------------------------


def test_s3_publisher_needs_a_bucket_and_a_known_encoding() -> None:
    found = by_path(problems(task_job(Publisher={"Type": "s3", "Params": {"Encoding": "zip"}})))
    assert found["Tasks[0].Publisher.Params.Bucket"] == "is required"
    assert "gzip or plain" in found["Tasks[0].Publisher.Params.Encoding"]
    assert S3Publisher.model_validate({"Bucket": "b", "Encoding": "PLAIN"}).encoding == "PLAIN"


@pytest.mark.parametrize("kind", ["local", "LOCAL", "ipfs", "noop", "nats", ""])
def test_simple_publishers(kind: str) -> None:
    spec = spec_from_data(task_job(Publisher={"Type": kind}))
    assert spec.task.publisher.type == kind.lower()


def test_unknown_publisher_types_are_kept() -> None:
    spec = spec_from_data(task_job(Publisher={"Type": "s3managed", "Params": {"X": 1}}))
    assert spec.task.publisher.type == "s3managed"
    assert spec.task.publisher.params == {"X": 1}


@pytest.mark.parametrize(
    ("kind", "canonical", "params"),
    [
        ("local", "localDirectory", {"SourcePath": "/d"}),
        ("localdirectory", "localDirectory", {"SourcePath": "/d"}),
        ("url", "urlDownload", {"URL": "https://x"}),
        ("URLDownload", "urlDownload", {"URL": "https://x"}),
        ("inline", "inline", {"URL": "data:,hi"}),
        ("S3", "s3", {"Bucket": "b"}),
        ("ipfs", "ipfs", {"CID": "Qm"}),
    ],
)
def test_input_source_types(kind: str, canonical: str, params: dict[str, str]) -> None:
    spec = spec_from_data(
        task_job(InputSources=[{"Source": {"Type": kind, "Params": params}, "Target": "/in"}])
    )
    assert spec.task.input_sources[0].source.type == canonical
    assert spec.task.input_sources[0].source.params == params


def test_input_source_problems_are_located() -> None:
    sources = [
        {"Source": {"Type": "s3", "Params": {}}, "Target": "relative"},
        {"Source": {"Type": "localDirectory", "Params": {"SourcePath": "/a"}}, "Target": "/x/../y"},
        {"Target": "/z"},
    ]
    found = by_path(problems(task_job(InputSources=sources)))
    assert found["Tasks[0].InputSources[0].Source.Params.Bucket"] == "is required"
    assert "absolute" in found["Tasks[0].InputSources[0].Target"]
    assert "'..'" in found["Tasks[0].InputSources[1].Target"]
    assert found["Tasks[0].InputSources[2].Source"] == "is required"


def test_input_source_targets_must_be_unique() -> None:
    source = {"Source": {"Type": "localDirectory", "Params": {"SourcePath": "/a"}}, "Target": "/in"}
    assert "repeated: /in" in one_problem(
        task_job(InputSources=[source, source]), "Tasks[0].InputSources"
    )


# ---- result paths -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("outputs", "absolute"),
        ("./outputs", "absolute"),
        ("/outputs/../etc", "'..'"),
        ("/..", "'..'"),
        ("../x", "absolute"),
        ("/", "whole task filesystem"),
    ],
)
def test_result_paths_are_absolute_without_dotdot(path: str, message: str) -> None:
    found = one_problem(
        task_job(ResultPaths=[{"Name": "out", "Path": path}]), "Tasks[0].ResultPaths[0].Path"
    )
    assert message in found


def test_result_paths_are_normalized() -> None:
    spec = spec_from_data(task_job(ResultPaths=[{"Name": "out", "Path": "/outputs//a/./b/"}]))
    assert spec.task.result_paths[0].path == "/outputs/a/b"


def test_result_path_names_are_checked_and_unique() -> None:
    found = by_path(
        problems(
            task_job(
                ResultPaths=[
                    {"Name": "a b", "Path": "/a"},
                    {"Path": "/b"},
                ]
            )
        )
    )
    assert "not a result name" in found["Tasks[0].ResultPaths[0].Name"]
    assert found["Tasks[0].ResultPaths[1].Name"] == "is required"
    dupes = task_job(ResultPaths=[{"Name": "o", "Path": "/a"}, {"Name": "o", "Path": "/b"}])
    assert "repeated: o" in one_problem(dupes, "Tasks[0].ResultPaths")


# ---- timeouts -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (600, 600),
        ("600", 600),
        ("90s", 90),
        ("5m", 300),
        ("1h30m", 5400),
        ("250ms", 0.25),
        (0, 0),
        (None, 0),
        (1.5, 1.5),
    ],
)
def test_timeouts_accept_seconds_and_durations(value: Any, seconds: float) -> None:
    spec = spec_from_data(
        task_job(Timeouts={"ExecutionTimeout": value, "QueueTimeout": value, "TotalTimeout": value})
    )
    timeouts = spec.task.timeouts
    assert timeouts.execution_timeout == timeouts.queue_timeout == timeouts.total_timeout == seconds


@pytest.mark.parametrize("value", [-1, "-5s", -0.5, "soon", True, [1], float("inf")])
def test_timeouts_must_be_non_negative_durations(value: Any) -> None:
    found = by_path(problems(task_job(Timeouts={"QueueTimeout": value, "TotalTimeout": value})))
    assert set(found) == {"Tasks[0].Timeouts.QueueTimeout", "Tasks[0].Timeouts.TotalTimeout"}


# ---- count and priority -------------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, -1])
@pytest.mark.parametrize("kind", ["batch", "service"])
def test_count_must_be_positive(kind: str, count: int) -> None:
    message = one_problem(job(Type=kind, Count=count), "Count")
    assert "at least 1" in message and kind in message


@pytest.mark.parametrize("count", [0, 1, 5])
@pytest.mark.parametrize("kind", ["ops", "daemon"])
def test_count_is_not_allowed_for_ops_and_daemon(kind: str, count: int) -> None:
    message = one_problem(job(Type=kind, Count=count), "Count")
    assert "not allowed" in message and kind in message


def test_count_null_is_fine_for_ops() -> None:
    assert spec_from_data(job(Type="ops", Count=None)).count is None


@pytest.mark.parametrize(("value", "count"), [(3, 3), ("3", 3), (2.0, 2)])
def test_count_accepts_whole_numbers(value: Any, count: int) -> None:
    assert spec_from_data(job(Count=value)).count == count


@pytest.mark.parametrize("value", [True, False, 1.5, "three", [1], 2**63])
def test_count_refuses_other_values(value: Any) -> None:
    one_problem(job(Count=value), "Count")


@pytest.mark.parametrize("value", [-1, True, "high", 2**63])
def test_priority_is_a_non_negative_whole_number(value: Any) -> None:
    one_problem(job(Priority=value), "Priority")
    assert spec_from_data(job(Priority=100)).priority == 100


@pytest.mark.parametrize("value", ["a b", "x/y", "ünï"])
def test_namespace_characters(value: str) -> None:
    assert "not a namespace" in one_problem(job(Namespace=value), "Namespace")


# ---- resources ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cpu", "millis"),
    [
        ("250m", 250),
        ("0.25", 250),
        (0.25, 250),
        ("2", 2000),
        (2, 2000),
        ("1", 1000),
        ("6000m", 6000),
        ("0.001", 1),
    ],
)
def test_cpu(cpu: Any, millis: int) -> None:
    assert spec_from_data(task_job(Resources={"CPU": cpu})).task.resources.cpu_millis == millis


@pytest.mark.parametrize(
    ("size", "size_bytes"),
    [
        ("1Gb", 10**9),
        ("100mb", 100 * 10**6),
        ("4Gi", 4 * 2**30),
        ("512Mi", 512 * 2**20),
        ("1024", 1024),
        (1024, 1024),
        ("26GB", 26 * 10**9),
        ("640G", 640 * 10**9),
        ("36mb", 36 * 10**6),
    ],
)
def test_sizes(size: Any, size_bytes: int) -> None:
    resources = spec_from_data(task_job(Resources={"Memory": size, "Disk": size})).task.resources
    assert resources.memory_bytes == resources.disk_bytes == size_bytes


@pytest.mark.parametrize(("gpu", "count"), [("8", 8), (8, 8), ("0", 0), (0, 0)])
def test_gpu_count(gpu: Any, count: int) -> None:
    assert spec_from_data(task_job(Resources={"GPU": gpu})).task.resources.gpus == count


def test_resource_problems_are_all_reported_with_paths() -> None:
    found = by_path(
        problems(task_job(Resources={"CPU": "lots", "Memory": "1Zb", "Disk": "-1Gb", "GPU": "1.5"}))
    )
    assert set(found) == {
        "Tasks[0].Resources.CPU",
        "Tasks[0].Resources.Memory",
        "Tasks[0].Resources.Disk",
        "Tasks[0].Resources.GPU",
    }
    assert found["Tasks[0].Resources.Memory"].startswith('"1Zb" is not a size (use e.g. 512Mi')
    assert "not a CPU amount" in found["Tasks[0].Resources.CPU"]
    assert "negative" in found["Tasks[0].Resources.Disk"]
    assert "GPU count" in found["Tasks[0].Resources.GPU"]


def test_the_error_text_reads_path_colon_message() -> None:
    with pytest.raises(InvalidSpec) as info:
        spec_from_data(task_job(Resources={"Memory": "1Zb"}))
    assert str(info.value).startswith('Tasks[0].Resources.Memory: "1Zb" is not a size')


# ---- network ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        (None, "None"),
        ("", "None"),
        ("none", "None"),
        ("full", "Full"),
        ("HOST", "Host"),
        ("http", "HTTP"),
        ("default", "Bridge"),
    ],
)
def test_network_types(given: str | None, canonical: str) -> None:
    assert spec_from_data(task_job(Network={"Type": given})).task.network.type == canonical


def test_network_domains_need_http() -> None:
    assert "HTTP" in one_problem(
        task_job(Network={"Type": "Full", "Domains": ["x.com"]}), "Tasks[0].Network"
    )
    assert one_problem(task_job(Network={"Type": "wormhole"}), "Tasks[0].Network.Type")


def test_network_ports() -> None:
    spec = spec_from_data(
        task_job(Network={"Type": "host", "Ports": [{"name": "http", "static": 8080}]})
    )
    assert spec.task.network.ports[0].static == 8080
    found = by_path(problems(task_job(Network={"Ports": [{"Static": 0}, {"Target": True}]})))
    assert set(found) == {"Tasks[0].Network.Ports[0].Static", "Tasks[0].Network.Ports[1].Target"}


# ---- constraints --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operator", "values", "canonical"),
    [
        ("=", ["a"], "="),
        ("==", ["a"], "="),
        ("!=", ["a"], "!="),
        ("in", ["a", "b"], "in"),
        ("IN", ["a"], "in"),
        ("notin", ["a"], "notin"),
        ("exists", [], "exists"),
        ("Exists", None, "exists"),
        ("!", [], "!"),
        ("gt", ["4"], "gt"),
        (">", [4], "gt"),
        ("lt", ["1.5"], "lt"),
        ("<", "2", "lt"),
    ],
)
def test_constraint_operators(operator: str, values: Any, canonical: str) -> None:
    spec = spec_from_data(job(Constraints=[{"Key": "k", "Operator": operator, "Values": values}]))
    constraint = spec.constraints[0]
    assert constraint.operator == canonical
    assert all(isinstance(v, str) for v in constraint.values)
    assert spec.requirements()[0].operator == canonical


@pytest.mark.parametrize(
    ("constraint", "path", "text"),
    [
        ({"Key": "k", "Operator": "~"}, "Constraints[0].Operator", "not a constraint operator"),
        ({"Key": "k", "Operator": "="}, "Constraints[0]", "at least one value"),
        ({"Key": "k", "Operator": "exists", "Values": ["x"]}, "Constraints[0]", "takes no values"),
        ({"Key": "k", "Operator": "gt", "Values": ["x"]}, "Constraints[0]", "needs a number"),
        (
            {"Key": "k", "Operator": "lt", "Values": ["1", "2"]},
            "Constraints[0]",
            "exactly one value",
        ),
        ({"Operator": "exists"}, "Constraints[0].Key", "is required"),
        ({"Key": "", "Operator": "exists"}, "Constraints[0].Key", "at least 1 character"),
        ({"Key": "k"}, "Constraints[0].Operator", "is required"),
        ("region=eu", "Constraints[0]", "mapping"),
    ],
)
def test_bad_constraints(constraint: Any, path: str, text: str) -> None:
    assert text in one_problem(job(Constraints=[constraint]), path)


def test_constraints_match_nodes() -> None:
    spec = spec_from_data(
        job(
            Constraints=[
                {"Key": "region", "Operator": "=", "Values": ["eu"]},
                {"Key": "spot", "Operator": "!"},
            ]
        )
    )
    reqs = spec.requirements()
    assert all(r.matches({"region": "eu"}) for r in reqs)
    assert not all(r.matches({"region": "eu", "spot": "1"}) for r in reqs)


# ---- all problems at once -----------------------------------------------------------------------


def test_every_problem_is_reported_at_once_with_its_path() -> None:
    data = {
        "Type": "batch",
        "Count": 0,
        "Priority": -2,
        "Constraints": [{"Key": "k", "Operator": "nope"}],
        "Tasks": [
            {
                "Engine": {"Type": "docker", "Params": {"Entrypoint": ["sh"]}},
                "Publisher": {"Type": "s3", "Params": {}},
                "Resourcse": {},
                "Resources": {"Memory": "1Zb"},
                "ResultPaths": [{"Name": "out", "Path": "relative"}],
                "Timeouts": {"ExecutionTimeout": -1},
            }
        ],
    }
    with pytest.raises(InvalidSpec) as info:
        spec_from_data(data, source="job.yaml")
    found = by_path(info.value.problems)
    assert set(found) == {
        "Count",
        "Priority",
        "Constraints[0].Operator",
        "Tasks[0].Engine.Params.Image",
        "Tasks[0].Publisher.Params.Bucket",
        "Tasks[0].Resourcse",
        "Tasks[0].Resources.Memory",
        "Tasks[0].ResultPaths[0].Path",
        "Tasks[0].Timeouts.ExecutionTimeout",
    }
    text = str(info.value)
    assert text.startswith("job.yaml: 9 problems:")
    assert "  - Tasks[0].Resourcse: unknown field 'Resourcse'; did you mean Resources?" in text
    assert isinstance(info.value, ShoalError)
    assert info.value.code == "invalid"


def test_problems_are_not_repeated() -> None:
    found = problems(job(Count=0, Tasks=[{"Engine": {"Type": "docker"}}]))
    assert len(found) == len({(p.path, p.message) for p in found})


def test_spec_is_immutable() -> None:
    spec = spec_from_data(job())
    with pytest.raises(ValueError, match="frozen"):
        spec.count = 5  # type: ignore[misc]
    assert isinstance(spec, JobSpec)
