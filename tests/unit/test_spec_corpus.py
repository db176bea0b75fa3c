"""Job specs as users write them: the project's fixtures and the Bacalhau reference corpus.

The fixtures (tests/fixtures/specs/, found through tests/corpus.py) are the project's own and
are checked everywhere, each against the table of what it must give. The reference corpus
and the job-type seeds (third-party text, never in the repository) are checked where
SHOAL_COMPAT_CORPUS names them: without it those tests skip, and fail under CI=true.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import pytest

from shared.errors import InvalidSpec
from shared.spec import JobSpec, load_spec, parse_document, spec_from_data
from shared.spec.normalize import LEGACY_ENTRY_TARGET
from shared.spec.params import DockerParams, S3Publisher, WasmParams
from tests.corpus import (
    FIXTURE_VARIABLES,
    corpus_names,
    corpus_text,
    fixture_names,
    fixture_spec,
    fixture_text,
    invalid_fixture_names,
    require_corpus,
    seeds_path,
)

FIXTURE_NAMES = fixture_names()
INVALID_NAMES = invalid_fixture_names()
CORPUS_NAMES = corpus_names()

KNOWN_ENGINES = ("docker", "wasm", "noop")
KNOWN_PUBLISHERS = ("", "s3", "local", "ipfs", "noop", "nats")
#: Fields whose keys are the user's data (label names, variable names), not spec fields.
DATA_MAPS = ("Meta", "Labels", "Env", "EnvironmentVariables")


@dataclass(frozen=True)
class Expected:
    """What a fixture must load to."""

    type: str
    count: int | None
    engine: str
    publisher: str = ""
    sources: tuple[str, ...] = ()
    network: str = "None"


#: Every valid fixture and what it gives (with its FIXTURE_VARIABLES).
FIXTURES: dict[str, Expected] = {
    "batch-local-publisher-env-template.yaml": Expected(
        "batch", 1, "docker", "local", ("localDirectory",)
    ),
    "batch-queueing.yaml": Expected("batch", 1, "docker"),
    "batch-s3-templated-input.yaml": Expected("batch", 1, "docker", sources=("s3",)),
    "batch-url-and-local-inputs.yaml": Expected(
        "batch", 4, "docker", "s3", ("localDirectory", "urlDownload"), "Full"
    ),
    "commented-batch.yaml": Expected("batch", 3, "docker", "ipfs", ("ipfs",), "HTTP"),
    "commented-daemon.yaml": Expected(
        "daemon", None, "docker", "", ("localDirectory", "localDirectory"), "Full"
    ),
    "commented-ops.yaml": Expected("ops", None, "docker", "ipfs", ("localDirectory",)),
    "commented-service.yaml": Expected("service", 1, "docker", network="Full"),
    "daemon-readwrite-directory.yaml": Expected(
        "daemon", None, "docker", sources=("localDirectory",)
    ),
    "docker-batch.yaml": Expected("batch", 1, "docker"),
    "docker-hello-nats.yaml": Expected("batch", 1, "docker", "nats"),
    "docker-log-streams.yaml": Expected("batch", 1, "docker", "local"),
    "docker-lowercase-keys.yaml": Expected("batch", 1, "docker"),
    "docker-results.json": Expected("batch", 1, "docker", "local"),
    "docker-results.yaml": Expected("batch", 1, "docker", "local"),
    "docker-s3-input.yaml": Expected("batch", 1, "docker", sources=("s3",)),
    "noop-nameless.yaml": Expected("batch", 1, "noop"),
    "noop-publisher.yaml": Expected("batch", 1, "noop", "noop"),
    "ops-gpu.yaml": Expected("ops", None, "docker", "s3"),
    "ops-query-template.yaml": Expected("ops", None, "docker", sources=("localDirectory",)),
    "ops-s3-publisher.yaml": Expected("ops", None, "docker", "s3"),
    "service-host-network.yaml": Expected("service", 1, "docker", network="Host"),
    "unknown-engine.yaml": Expected("batch", 1, "hovercraft"),
    "unknown-publisher-lowercase.yaml": Expected("batch", 1, "docker", "carrierpigeon"),
    "versions-batch-v1.yaml": Expected("batch", 2, "docker"),
    "versions-batch-v2.yaml": Expected("batch", 2, "docker"),
    "versions-daemon-v1.yaml": Expected("daemon", None, "docker"),
    "versions-daemon-v2.yaml": Expected("daemon", None, "docker"),
    "wasm-inline.yaml": Expected("batch", 1, "wasm", sources=("inline",)),
    "wasm-legacy-entry-module.yaml": Expected("batch", 1, "wasm", sources=("inline",)),
    "wasm-ops-default-variable.yaml": Expected("ops", None, "wasm", sources=("localDirectory",)),
    "wasm-templated-count.yaml": Expected("batch", 3, "wasm", sources=("localDirectory",)),
}

#: Every fixture of invalid/ and the paths of the problems it must be refused with.
INVALID: dict[str, list[str]] = {
    "count-for-daemon.yaml": ["Count"],
    "engine-type-missing.yaml": ["Tasks[0].Engine.Type"],
    "inline-source-not-data-url.yaml": ["Tasks[0].InputSources[0].Source.Params.URL"],
    "key-given-twice.yaml": ["COUNT"],
    "many-problems.yaml": [
        "Count",
        "Tasks[0].Engine.Params.Image",
        "Tasks[0].Resources.Memory",
        "Tasks[0].Resourcse",
        "Tasks[0].ResultPaths[0].Path",
    ],
    "s3-publisher-bad-encoding.yaml": ["Tasks[0].Publisher.Params.Encoding"],
    "two-documents.yaml": [""],
}

#: The -V variables each templated corpus file needs (optional ones, with `or index`, left out).
REQUIRED_VARIABLES: dict[str, dict[str, str]] = {
    "deploy-eu-v1.yaml": {"count": "3"},
    "config-reader.yaml": {},
    "ops-job.yaml": {"query": "SELECT 1"},
    "error-analysis.yaml": {
        "AccessLogBucket": "logs-bucket",
        "AccessLogPrefix": "nginx/",
        "AWSRegion": "eu-west-1",
    },
    "data-generator.yaml": {
        "Region": "us",
        "Events": "3000",
        "StartDate": "2024-01-01",
        "EndDate": "2024-12-31",
        "RotateInterval": "month",
    },
    "template-job-publish.yaml": {
        "model_url": "https://example.com/yolov5s.pt",
        "input_bucket": "videos",
        "classes": "0",
        "model_name": "yolov5s.pt",
        "adb_password": "secret",
    },
    "template_job.yaml": {"fulltext": "cHJpbnQoMSk="},
    "sample-job.yaml": {"steps": "10", "bucket": "llama-results"},
    "sqs-proxy.yaml": {"queue_url": "https://sqs.us-east-1.amazonaws.com/1/q"},
    "sqs-puller.yaml": {"queue_url": "https://sqs.us-east-1.amazonaws.com/1/q"},
}

SEED_VARIABLES = {
    "query": "SELECT count(*) FROM logs",
    "OpenSearchEndpoint": "https://search.example.com",
    "AccessLogBucket": "access-logs",
    "AWSRegion": "us-west-2",
}

COMMENTED = [f"commented-{kind}.yaml" for kind in ("batch", "ops", "daemon", "service")]


def corpus_spec(name: str, **extra: str) -> JobSpec:
    return load_spec(corpus_text(name), {**REQUIRED_VARIABLES.get(name, {}), **extra}, source=name)


def seed_blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", seeds_path().read_text(encoding="utf-8"), re.S)


def seed(kind: str, **extra: str) -> JobSpec:
    (block,) = [b for b in seed_blocks() if re.search(rf"^Type: {kind}$", b, re.M)]
    return load_spec(block, {**SEED_VARIABLES, **extra}, source=f"seed {kind}")


def docker(spec: JobSpec) -> DockerParams:
    assert spec.task.engine.type == "docker"
    return DockerParams.model_validate(spec.task.engine.params)


def wasm(spec: JobSpec) -> WasmParams:
    assert spec.task.engine.type == "wasm"
    return WasmParams.model_validate(spec.task.engine.params)


def constraints(spec: JobSpec) -> list[tuple[str, str, list[str]]]:
    return [(c.key, c.operator, c.values) for c in spec.constraints]


def template_names(text: str) -> set[str]:
    """The variables a spec's text names ({{.name}} and {{or (index . "name") ...}})."""
    return set(re.findall(r"\{\{\s*\.(\w+)", text)) | set(
        re.findall(r'\{\{\s*or \(index \. "([^"]+)"\)', text)
    )


# ---- checks every spec must pass, fixture or corpus ---------------------------------------------


def check_valid(spec: JobSpec) -> None:
    assert spec.type in ("batch", "ops", "daemon", "service")
    assert len(spec.tasks) == 1
    assert spec.id is None
    if spec.type in ("batch", "service"):
        assert spec.count is not None and spec.count >= 1
    else:
        assert spec.count is None


def check_round_trip(spec: JobSpec) -> None:
    """The orchestrator stores `dump()` and re-reads it with `spec_from_data`."""
    dumped = spec.dump()
    again = spec_from_data(json.loads(json.dumps(dumped)))
    assert again == spec
    assert again.dump() == dumped


def check_any_case(spec: JobSpec) -> None:
    """Bacalhau decodes keys case-insensitively; so do we, in any mix."""
    data = spec.dump()

    def recase(value: Any, upper: bool) -> Any:
        if isinstance(value, dict):
            return {
                (k.upper() if upper else k.lower()): v if k in DATA_MAPS else recase(v, not upper)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [recase(v, upper) for v in value]
        return value

    # Params of unknown engines are opaque: their keys are data and must keep their case.
    engine = data["Tasks"][0]["Engine"]
    opaque = engine["Type"] not in KNOWN_ENGINES
    recased = recase(data, upper=True)
    task_key = next(k for k in recased if k.lower() == "tasks")
    task = recased[task_key][0]
    engine_key = next(k for k in task if k.lower() == "engine")
    params_key = next(k for k in task[engine_key] if k.lower() == "params")
    if opaque:
        task[engine_key][params_key] = engine["Params"]
    publisher = data["Tasks"][0]["Publisher"]
    if publisher["Type"] not in KNOWN_PUBLISHERS:
        pub_key = next(k for k in task if k.lower() == "publisher")
        task[pub_key] = publisher
    assert spec_from_data(recased) == spec


def check_needs_variables(text: str, name: str, required: dict[str, str]) -> None:
    """Without variables, exactly the required ones are named, each at its line."""
    with pytest.raises(InvalidSpec) as info:
        load_spec(text, {}, source=name)
    missing = set()
    for problem in info.value.problems:
        match = re.search(r'template variable "([^"]+)" is not set', problem.message)
        assert match, problem
        assert problem.path.startswith("line ")
        missing.add(match.group(1))
    assert missing == set(required)
    assert str(info.value).startswith(f"{name}: ")


def check_one_missing_named_alone(text: str, required: dict[str, str]) -> None:
    variables = dict(required)
    dropped = sorted(variables).pop()
    del variables[dropped]
    with pytest.raises(InvalidSpec) as info:
        load_spec(text, variables)
    names = {re.findall(r'"([^"]+)"', p.message)[0] for p in info.value.problems}
    assert names == {dropped}


# ---- the fixtures as a whole --------------------------------------------------------------------


def test_the_fixture_tables_name_every_fixture() -> None:
    assert sorted(FIXTURES) == FIXTURE_NAMES
    assert sorted(INVALID) == INVALID_NAMES
    templated = {n for n in FIXTURE_NAMES if "{{" in fixture_text(n)}
    assert templated == set(FIXTURE_VARIABLES)


@pytest.mark.parametrize("name", FIXTURE_NAMES + [f"invalid/{n}" for n in INVALID_NAMES])
def test_every_fixture_says_what_it_exercises(name: str) -> None:
    text = fixture_text(name)
    if name.endswith(".json"):  # JSON has no comments: its Name says it
        assert "JSON" in json.loads(text)["Name"]
    else:
        assert text.startswith("# ")


def test_the_fixtures_cover_every_kind() -> None:
    expected = FIXTURES.values()
    assert {e.type for e in expected} == {"batch", "ops", "daemon", "service"}
    engines = {e.engine for e in expected}
    assert set(KNOWN_ENGINES) < engines  # and one no node offers
    publishers = {e.publisher for e in expected}
    assert set(KNOWN_PUBLISHERS) < publishers  # and one no node offers
    sources = {s for e in expected for s in e.sources}
    assert sources == {"inline", "localDirectory", "urlDownload", "s3", "ipfs"}
    assert {e.network for e in expected} == {"None", "Host", "Full", "HTTP"}
    # Both document forms, both key casings, both wasm EntryModule forms, two versions.
    assert {n.rsplit(".", 1)[1] for n in FIXTURE_NAMES} == {"yaml", "json"}
    lowercase = [n for n in FIXTURE_NAMES if re.match(r"(#.*\n)*name: ", fixture_text(n))]
    assert len(lowercase) >= 3
    assert {"versions-batch-v1.yaml", "versions-daemon-v2.yaml"} <= set(FIXTURE_NAMES)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_every_fixture_validates_to_its_expectations(name: str) -> None:
    spec = fixture_spec(name)
    check_valid(spec)
    task = spec.task
    got = Expected(
        spec.type,
        spec.count,
        task.engine.type,
        task.publisher.type,
        tuple(s.source.type for s in task.input_sources),
        task.network.type,
    )
    assert got == FIXTURES[name]


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixtures_round_trip_through_their_canonical_form(name: str) -> None:
    check_round_trip(fixture_spec(name))


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixture_keys_may_be_any_case(name: str) -> None:
    check_any_case(fixture_spec(name))


@pytest.mark.parametrize("name", sorted(n for n, v in FIXTURE_VARIABLES.items() if v))
def test_templated_fixtures_need_their_variables(name: str) -> None:
    text = fixture_text(name)
    assert set(FIXTURE_VARIABLES[name]) <= template_names(text)
    check_needs_variables(text, name, FIXTURE_VARIABLES[name])


@pytest.mark.parametrize("name", sorted(n for n, v in FIXTURE_VARIABLES.items() if len(v) > 1))
def test_one_missing_fixture_variable_is_named_alone(name: str) -> None:
    check_one_missing_named_alone(fixture_text(name), FIXTURE_VARIABLES[name])


@pytest.mark.parametrize("name", INVALID_NAMES)
def test_invalid_fixtures_are_refused_with_every_problem(name: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        load_spec(fixture_text(f"invalid/{name}"), source=name)
    assert sorted(p.path for p in info.value.problems) == INVALID[name]
    assert all(p.message for p in info.value.problems)


# ---- facts about each fixture -------------------------------------------------------------------


def test_fixture_docker_batch() -> None:
    spec = fixture_spec("docker-batch.yaml")
    assert (spec.name, spec.namespace, spec.count) == ("shoal docker batch", "default", 1)
    assert docker(spec).parameters == ["-c", "echo 42 parcels counted"]
    assert spec.task.publisher.type == ""
    assert spec.task.result_paths == []


def test_fixture_lowercase_keys() -> None:
    spec = fixture_spec("docker-lowercase-keys.yaml")
    assert spec.name == "lowercase keys"
    assert spec.task.name == "the only task"
    params = docker(spec)
    assert params.image == "busybox:1.37.0"
    assert params.entrypoint == ["/bin/sh"]
    assert params.parameters == ["-c", "echo keys in any case"]


@pytest.mark.parametrize("name", ["docker-results.yaml", "docker-results.json"])
def test_fixture_result_paths(name: str) -> None:
    spec = fixture_spec(name)
    assert [(r.name, r.path) for r in spec.task.result_paths] == [("answers", "/answers")]
    assert spec.task.publisher.type == "local"
    assert docker(spec).parameters[-1] == "echo 2718 > /answers/answer.txt"


def test_fixture_results_json_and_yaml_agree_but_for_the_name() -> None:
    from_json = fixture_spec("docker-results.json").dump()
    from_yaml = fixture_spec("docker-results.yaml").dump()
    assert from_json.pop("Name") != from_yaml.pop("Name")
    assert from_json == from_yaml


def test_fixture_s3_input() -> None:
    spec = fixture_spec("docker-s3-input.yaml")
    (source,) = spec.task.input_sources
    assert (source.alias, source.target, source.source.type) == ("survey", "/survey", "s3")
    assert source.source.params == {
        "Bucket": "shoal-fixture-surveys",
        "Key": "seabed/2024/",
        "Region": "eu-north-1",
        "Endpoint": "http://127.0.0.1:9",
    }


def test_fixture_noop_publisher_and_nameless() -> None:
    spec = fixture_spec("noop-publisher.yaml")
    assert spec.task.engine.params == {}
    assert spec.task.publisher.type == "noop"
    assert spec.task.result_paths[0].path == "/nothing"
    nameless = fixture_spec("noop-nameless.yaml")
    assert nameless.name == ""
    assert nameless.dump()["Name"] == ""
    assert nameless.task.engine.type == "noop"


def test_fixture_unknown_engine_keeps_its_params_as_written() -> None:
    spec = fixture_spec("unknown-engine.yaml")
    assert spec.task.engine.type == "hovercraft"
    assert spec.task.engine.params == {
        "Image": "busybox:1.37.0",
        "Entrypoint": ["/bin/sh"],
        "Parameters": ["-c", "echo never runs"],
        "fuelMix": "eels",
    }
    assert spec.dump()["Tasks"][0]["Engine"]["Type"] == "hovercraft"


def test_fixture_unknown_publisher_is_kept() -> None:
    spec = fixture_spec("unknown-publisher-lowercase.yaml")
    assert spec.task.publisher.type == "carrierpigeon"
    assert spec.dump()["Tasks"][0]["Publisher"]["Type"] == "carrierpigeon"
    assert (spec.name, spec.count) == ("unknown publisher", 1)
    assert docker(spec).parameters == ["-c", "echo published by pigeon"]


def test_fixture_wasm_inline_module() -> None:
    spec = fixture_spec("wasm-inline.yaml")
    params = wasm(spec)
    assert (params.entry_module, params.entrypoint) == ("/modules/hello.wasm", "_start")
    assert params.parameters == ["from", "a fixture"]
    (source,) = spec.task.input_sources
    assert source.target == "/modules/hello.wasm"
    assert source.source.params["URL"].startswith("data:application/wasm;base64,AGFzbQ")


def test_fixture_wasm_legacy_entry_module_moves_to_input_sources() -> None:
    spec = fixture_spec("wasm-legacy-entry-module.yaml")
    params = wasm(spec)
    (source,) = spec.task.input_sources
    assert params.entry_module == source.target == LEGACY_ENTRY_TARGET
    assert params.parameters == [] and params.environment_variables == {}
    assert params.import_modules == []
    modern = fixture_spec("wasm-inline.yaml")
    assert source.source == modern.task.input_sources[0].source


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_fixture_versions_share_their_name(version: str) -> None:
    batch = fixture_spec(f"versions-batch-{version}.yaml")
    assert (batch.name, batch.type, batch.count) == ("fixture-versioned-batch", "batch", 2)
    assert docker(batch).parameters[-1].endswith(f"revision {version[1]}")
    daemon = fixture_spec(f"versions-daemon-{version}.yaml")
    assert (daemon.name, daemon.type, daemon.count) == ("fixture-versioned-daemon", "daemon", None)
    assert f"LighthouseOn{version.upper()}" in docker(daemon).parameters[1]


def test_fixture_service_on_the_host_network() -> None:
    spec = fixture_spec("service-host-network.yaml")
    assert (spec.type, spec.count) == ("service", 1)
    assert spec.task.network.type == "Host"
    (port,) = spec.task.network.ports
    assert (port.name, port.static) == ("api", 9090)
    variables = FIXTURE_VARIABLES["service-host-network.yaml"]
    assert spec.task.env == {
        "RELAY_TOKEN": "env:RELAY_TOKEN",
        "RELAY_MODE": "forward",
        "RELAY_UPSTREAM": variables["upstream"],
    }
    assert constraints(spec) == [("role", "=", ["gateway"])]
    assert docker(spec).image.endswith("/relay:2.1")


def test_fixture_templated_count_and_tiny_resources() -> None:
    spec = fixture_spec("wasm-templated-count.yaml")
    assert (spec.name, spec.type, spec.count) == ("buoy-reporter-north", "batch", 3)
    assert [(c.key, c.values) for c in spec.constraints] == [("role", ["buoy"]), ("sea", ["north"])]
    assert spec.labels == {"buoy-reporter": "north"}
    params = wasm(spec)
    assert params.entry_module == "/opt/buoy/reporter.wasm"
    # a quoted "#" is data; the comments after the items are not
    assert params.parameters == ["--sink=http://127.0.0.1:7070", "--marker=#00FF00", "--every=10"]
    assert spec.task.resources.cpu_millis == 2
    assert spec.task.resources.memory_bytes == 48_000_000
    assert spec.task.timeouts.queue_timeout == 120
    assert spec.task.env == {"BUOY_ID": "env:BUOY_ID"}
    assert spec.task.input_sources[0].source.params == {"SourcePath": "/opt/buoy/"}
    assert fixture_spec("wasm-templated-count.yaml", replicas="7").count == 7


def test_fixture_templated_count_refuses_a_bad_count() -> None:
    with pytest.raises(InvalidSpec) as info:
        fixture_spec("wasm-templated-count.yaml", replicas="0")
    assert [p.path for p in info.value.problems] == ["Count"]


def test_fixture_optional_variable_default_and_override() -> None:
    spec = fixture_spec("wasm-ops-default-variable.yaml")
    assert (spec.type, spec.count) == ("ops", None)
    assert wasm(spec).parameters == ["--settings=/opt/settings/default.toml"]
    (source,) = spec.task.input_sources
    assert source.source.params == {"SourcePath": "/opt/settings/"}  # ReadWrite false: default
    assert source.target == "/opt/settings"
    other = fixture_spec("wasm-ops-default-variable.yaml", settings="/etc/other.toml")
    assert wasm(other).parameters == ["--settings=/etc/other.toml"]


def test_fixture_daemon_with_a_read_write_directory() -> None:
    spec = fixture_spec("daemon-readwrite-directory.yaml")
    assert (spec.type, spec.count, spec.namespace) == ("daemon", None, "acoustics")
    assert constraints(spec) == [("role", "=", ["Hydrophone"])]  # "==" is "="
    assert spec.task.input_sources[0].source.params == {
        "SourcePath": "/srv/fixtures/recordings",
        "ReadWrite": True,
    }
    assert docker(spec).parameters[:2] == ["--interval", "5"]


def test_fixture_ops_optional_variables() -> None:
    spec = fixture_spec("ops-query-template.yaml")
    assert (spec.type, spec.count, spec.namespace) == ("ops", None, "fisheries")
    assert docker(spec).parameters == ["--query", "SELECT 1", "--start-time", "", "--end-time", ""]
    timed = fixture_spec(
        "ops-query-template.yaml", **{"start-time": "2024-06-01", "end-time": "06:30"}
    )
    assert docker(timed).parameters[3::2] == ["2024-06-01", "06:30"]  # text, not a date or 390


def test_fixture_templated_s3_input() -> None:
    spec = fixture_spec("batch-s3-templated-input.yaml")
    assert (spec.type, spec.count, spec.namespace) == ("batch", 1, "fisheries")
    (source,) = spec.task.input_sources
    assert source.source.params == {
        "Bucket": "fixture-catches",
        "Key": "landings/",
        "Filter": "catch-.*",
        "Region": "eu-west-3",
    }
    query = docker(spec).parameters[1]
    assert query.startswith("SELECT species, MAX(weight_kg) AS heaviest FROM catches")
    assert query.endswith("ORDER BY heaviest DESC;\n")  # folded: one line, one final newline
    patterned = fixture_spec("batch-s3-templated-input.yaml", CatchPattern="landing-.*")
    assert patterned.task.input_sources[0].source.params["Filter"] == "landing-.*"


def test_fixture_s3_publisher() -> None:
    spec = fixture_spec("ops-s3-publisher.yaml")
    assert (spec.type, spec.count, spec.namespace) == ("ops", None, "tides")
    assert constraints(spec) == [("sea", "=", ["baltic"])]
    assert docker(spec).parameters == ["--sea", "baltic", "--days", "30"]
    publisher = S3Publisher.model_validate(spec.task.publisher.params)
    assert (publisher.bucket, publisher.key, publisher.encoding) == (
        "fixture-tides",
        "tables/{nodeID}/",
        "plain",
    )
    assert (publisher.endpoint, publisher.region) == (
        "http://minio.fixtures.invalid:9000",
        "fixture-region",
    )
    assert spec.task.resources.cpu_millis == 2000
    assert spec.task.resources.memory_bytes == 512 * 10**6
    assert spec.task.env == {"TZ": "UTC"}
    assert spec.task.result_paths[0].path == "/tables"


def test_fixture_queueing_job_as_tools_dump_it() -> None:
    spec = fixture_spec("batch-queueing.yaml")
    assert spec.name == ""
    assert (spec.type, spec.count, spec.priority) == ("batch", 1, 0)
    assert spec.task.publisher.type == ""
    assert spec.task.network.type == "None"
    assert spec.task.timeouts.execution_timeout == 300
    assert spec.task.timeouts.queue_timeout == 900
    assert spec.constraints == []
    assert spec.labels == {"purpose": "fixture-queueing"}
    assert docker(spec).parameters == ["--workers", "3", "--seconds", "45"]
    assert "WorkingDirectory" not in spec.task.engine.params  # "" is the default


def test_fixture_url_and_local_inputs() -> None:
    spec = fixture_spec("batch-url-and-local-inputs.yaml")
    assert (spec.name, spec.type, spec.count) == ("Fixture Inference", "batch", 4)
    assert spec.task.name == "Classify fish in sonar frames"
    resources = spec.task.resources
    assert resources.cpu == "3500m" and resources.cpu_millis == 3500
    assert resources.memory_bytes == 12 * 10**9
    assert resources.disk_bytes == 40 * 10**9
    assert spec.task.network.type == "Full"
    local, url = spec.task.input_sources
    assert (local.source.type, local.target) == ("localDirectory", "/frames")
    assert local.source.params == {"SourcePath": "/srv/fixtures/frames"}
    assert (url.source.type, url.target) == ("urlDownload", "/weights")
    assert url.source.params == {"URL": "https://models.example.org/fish-v5.bin"}
    env = docker(spec).env()
    assert env == {
        "FRAME_BUCKET": "sonar-frames",
        "SPECIES": "cod",
        "OUTPUT_DIR": "/labels",
        "WEIGHTS": "/weights/fish-v5.bin",
        "API_SECRET": "hunter2",
    }
    publisher = S3Publisher.model_validate(spec.task.publisher.params)
    assert publisher.key == "labels/{date}/{time}/{jobID}/{executionID}"
    assert publisher.encoding == "gzip"  # the default
    assert spec.task.result_paths[0].path == "/labels"


def test_fixture_template_in_environment_variables() -> None:
    spec = fixture_spec("batch-local-publisher-env-template.yaml")
    assert (spec.namespace, spec.task.name) == ("research", "Run over the volume")
    env = docker(spec).env()
    assert env["SCRIPT"] == FIXTURE_VARIABLES["batch-local-publisher-env-template.yaml"]["script"]
    assert env["SCRIPT_IS_BASE64"] == "yes"  # text: not YAML 1.1's true
    assert spec.task.input_sources[0].source.params == {"SourcePath": "/mnt/fixture-volume"}
    assert spec.task.publisher.type == "local"
    assert spec.task.resources.cpu_millis == 2000
    assert spec.task.resources.memory_bytes == 8 * 10**9
    assert spec.task.resources.disk_bytes == 10 * 10**9


def test_fixture_gpus() -> None:
    spec = fixture_spec("ops-gpu.yaml")
    assert (spec.name, spec.type, spec.count) == ("reef-model-12", "ops", None)
    resources = spec.task.resources
    assert resources.gpu == "4" and resources.gpus == 4
    assert resources.cpu_millis == 16_000
    assert resources.memory_bytes == 128 * 10**9
    assert docker(spec).env() == {"EPOCHS": "12"}
    assert docker(spec).parameters == ["-c", "./train.sh\n"]
    assert spec.task.publisher.params["Bucket"] == "reef-results"
    assert spec.task.timeouts.execution_timeout == 7200
    assert spec.task.timeouts.queue_timeout == 1800


def test_fixtures_run_end_to_end_carry_what_the_e2e_tests_expect() -> None:
    """tests/e2e/test_docker_jobs.py runs these three on dockerd; their commands are checked
    here too, where no dockerd is needed."""
    assert docker(fixture_spec("docker-hello-nats.yaml")).parameters == [
        "-c",
        "echo ahoy from a fixture",
    ]
    streams = docker(fixture_spec("docker-log-streams.yaml")).parameters[1]
    assert "echo out $n;" in streams and "echo err $n >&2;" in streams
    assert fixture_spec("docker-log-streams.yaml").task.publisher.type == "local"


# ---- the commented fixtures: a comment above every field ----------------------------------------


@pytest.mark.parametrize("name", COMMENTED)
def test_commented_params_are_under_engine_despite_the_indentation(name: str) -> None:
    """`Params:` sits at Type's indentation after a less-indented comment: still in Engine."""
    rendered = re.sub(r"\{\{[^}]*\}\}", "x", fixture_text(name))
    raw = parse_document(rendered)
    task = raw["Tasks"][0]
    assert set(task["Engine"]) == {"Type", "Params"}
    assert "Params" not in task
    assert "Image" in task["Engine"]["Params"]


def test_commented_batch() -> None:
    spec = fixture_spec("commented-batch.yaml")
    assert (spec.name, spec.type, spec.count, spec.priority) == (
        "Commented Batch",
        "batch",
        3,
        50,
    )
    assert spec.meta == {
        "Fixture role": "show every documented field",
        "Reviewed by": "nobody yet",
    }
    assert spec.labels == {"Fixture kind": "commented", "Another label": "with spaces"}
    assert constraints(spec) == [("kernel", "=", ["linux"])]
    task = spec.task
    assert task.name == "Sum the soundings"
    params = docker(spec)
    assert params.image == "registry.example.org/shoal-fixtures/soundings:2.0"
    assert params.entrypoint == []
    assert params.parameters == ["python", "sum.py", "7", "/out/total.txt"]
    assert params.env() == {"SURVEY_NAME": "harbour", "UNITS": "metres"}
    assert params.meta == {"Fixture goal": "a comment above every field"}
    assert task.publisher.type == "ipfs"
    assert task.input_sources[0].source.params == {
        "CID": "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
    }
    assert (task.resources.cpu_millis, task.resources.memory_bytes) == (500, 2 * 10**9)
    assert (task.resources.disk_bytes, task.resources.gpus) == (200 * 10**6, 0)
    assert task.network.type == "HTTP"
    assert task.network.domains == ["example.org", "registry.example.org"]
    assert (task.timeouts.queue_timeout, task.timeouts.total_timeout) == (120, 600)


def test_commented_ops() -> None:
    spec = fixture_spec("commented-ops.yaml")
    assert (spec.name, spec.type, spec.count, spec.namespace) == (
        "Commented Ops",
        "ops",
        None,
        "harbour",
    )
    query = FIXTURE_VARIABLES["commented-ops.yaml"]["query"]
    assert docker(spec).parameters == ["--query", query, "--start-time", "", "--end-time", ""]
    timed = fixture_spec("commented-ops.yaml", **{"start-time": "10m", "end-time": "now"})
    assert docker(timed).parameters[3::2] == ["10m", "now"]
    assert docker(spec).env() == {"LOG_FORMAT": "json"}
    assert spec.task.input_sources[0].source.type == "localDirectory"


def test_commented_daemon() -> None:
    spec = fixture_spec("commented-daemon.yaml")
    assert (spec.name, spec.type, spec.count) == ("Commented Daemon", "daemon", None)
    variables = FIXTURE_VARIABLES["commented-daemon.yaml"]
    env = docker(spec).env()
    assert env["SINK_URL"] == variables["SinkURL"]
    assert env["ARCHIVE_BUCKET"] == variables["ArchiveBucket"]
    assert env["ARCHIVE_REGION"] == variables["ArchiveRegion"]
    assert env["FLUSH_SECONDS"] == "30"
    assert spec.task.network.type == "Full"
    assert spec.task.resources.memory_bytes == 3 * 10**9
    state = spec.task.input_sources[1]
    assert state.source.params == {"SourcePath": "/srv/fixtures/harbour-state", "ReadWrite": True}


def test_commented_service() -> None:
    spec = fixture_spec("commented-service.yaml")
    assert (spec.name, spec.type, spec.count, spec.namespace) == (
        "Commented Service",
        "service",
        1,
        "streams",
    )
    assert [(c.key, c.values) for c in spec.constraints] == [
        ("arch", ["riscv64"]),
        ("sea", ["baltic"]),
    ]
    assert docker(spec).image.endswith("/stream-reader:latest")
    assert spec.task.resources.memory_bytes == 6 * 10**9
    assert spec.task.network.type == "Full"


@pytest.mark.parametrize("kind", ["ops", "daemon"])
def test_commented_count_is_refused_for_ops_and_daemon(kind: str) -> None:
    name = f"commented-{kind}.yaml"
    text = fixture_text(name).replace(f"Type: {kind}\n", f"Type: {kind}\nCount: 2\n")
    with pytest.raises(InvalidSpec) as info:
        load_spec(text, FIXTURE_VARIABLES[name])
    assert [p.path for p in info.value.problems] == ["Count"]


# ---- the reference corpus as a whole ------------------------------------------------------------


def test_the_corpus_is_there() -> None:
    require_corpus()
    names = corpus_names()
    assert len(names) >= 30
    templated = {n for n in names if "{{" in corpus_text(n)}
    assert templated == set(REQUIRED_VARIABLES)


@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_every_corpus_file_validates(name: str) -> None:
    check_valid(corpus_spec(name))


@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_corpus_specs_round_trip_through_their_canonical_form(name: str) -> None:
    check_round_trip(corpus_spec(name))


@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_corpus_yaml_keys_may_be_any_case(name: str) -> None:
    check_any_case(corpus_spec(name))


@pytest.mark.parametrize("name", sorted(n for n, v in REQUIRED_VARIABLES.items() if v))
def test_templated_corpus_files_need_their_variables(name: str) -> None:
    check_needs_variables(corpus_text(name), name, REQUIRED_VARIABLES[name])


@pytest.mark.parametrize("name", sorted(n for n, v in REQUIRED_VARIABLES.items() if len(v) > 1))
def test_one_missing_variable_is_named_alone(name: str) -> None:
    check_one_missing_named_alone(corpus_text(name), REQUIRED_VARIABLES[name])


# ---- unknown types in the corpus: accepted now, refused by the scheduler ------------------------


@pytest.mark.parametrize(
    ("name", "engine", "params"),
    [
        ("custom-task-type.yaml", "flibble", {"Some": "data"}),
        (
            "unsupported_engine_type.yml",
            "vroomvroom",
            {
                "Image": "busybox:1.37.0",
                "Entrypoint": ["/bin/sh"],
                "Parameters": ["-c", "echo hello bacalhau world"],
            },
        ),
    ],
)
def test_unknown_engine_types_parse_and_keep_their_params(
    name: str, engine: str, params: dict[str, Any]
) -> None:
    spec = corpus_spec(name)
    assert spec.task.engine.type == engine
    assert spec.task.engine.params == params
    assert spec.dump()["Tasks"][0]["Engine"]["Type"] == engine


def test_unknown_publisher_type_parses_and_is_kept() -> None:
    spec = corpus_spec("20-s3managed-publisher.yml")
    assert spec.task.publisher.type == "s3managed"
    assert spec.dump()["Tasks"][0]["Publisher"]["Type"] == "s3managed"
    assert spec.name == "A Simple S3 Managed Publisher Job"
    assert docker(spec).parameters == ["-c", "echo expected execution stdout"]


# ---- facts about each corpus file ---------------------------------------------------------------


def test_docker_hello_lowercase_keys() -> None:
    spec = corpus_spec("docker-hello.yaml")
    assert spec.name == "A Simple Docker Job"
    assert spec.task.name == "My main task"
    params = docker(spec)
    assert params.image == "busybox:1.37.0"
    assert params.entrypoint == ["/bin/sh"]
    assert params.parameters == ["-c", "echo Hello Bacalhau!"]
    assert spec.count == 1


def test_docker_yaml() -> None:
    spec = corpus_spec("docker.yaml")
    assert (spec.name, spec.namespace, spec.count) == ("Docker Job", "default", 1)
    assert docker(spec).parameters == ["-c", "echo 15"]
    assert spec.task.publisher.type == ""


@pytest.mark.parametrize("name", ["docker-output.json", "docker-output.yaml"])
def test_docker_output_result_paths(name: str) -> None:
    spec = corpus_spec(name)
    assert [(r.name, r.path) for r in spec.task.result_paths] == [
        ("output_custom", "/output_custom")
    ]
    assert spec.task.publisher.type == "local"
    assert docker(spec).parameters[-1] == "echo 15 > /output_custom/output.txt"


def test_docker_output_json_and_yaml_agree_but_for_name_and_image() -> None:
    from_json = corpus_spec("docker-output.json").dump()
    from_yaml = corpus_spec("docker-output.yaml").dump()
    for dumped in (from_json, from_yaml):
        dumped.pop("Name")
        dumped["Tasks"][0]["Engine"]["Params"].pop("Image")
        dumped["Tasks"][0]["Engine"]["Params"].pop("Entrypoint")
    assert from_json == from_yaml


def test_docker_s3_input() -> None:
    spec = corpus_spec("docker-s3.yaml")
    (source,) = spec.task.input_sources
    assert (source.alias, source.target, source.source.type) == (
        "input_custom",
        "/input_custom",
        "s3",
    )
    assert source.source.params == {
        "Bucket": "bacalhau-test-datasets",
        "Key": "integration-tests-do-not-delete/set1/",
        "Region": "eu-west-1",
    }


def test_noop() -> None:
    spec = corpus_spec("noop.yaml")
    assert spec.task.engine.type == "noop"
    assert spec.task.engine.params == {}
    assert spec.task.publisher.type == "noop"
    assert spec.task.result_paths[0].path == "/output_custom"


def test_nameless() -> None:
    spec = corpus_spec("nameless.yaml")
    assert spec.name == ""
    assert spec.dump()["Name"] == ""
    assert spec.task.engine.type == "noop"


def test_wasm() -> None:
    spec = corpus_spec("wasm.yaml")
    params = WasmParams.model_validate(spec.task.engine.params)
    assert params.entry_module == "wasm.main"
    assert params.entrypoint == "_start"
    (source,) = spec.task.input_sources
    assert source.target == "/wasm.main"
    assert source.source.type == "inline"
    assert source.source.params["URL"].startswith("data:application/wasm;base64,AGFzbQ")


def test_wasm_legacy_entry_module_moves_to_input_sources() -> None:
    spec = corpus_spec("wasm_legacy.yaml")
    params = WasmParams.model_validate(spec.task.engine.params)
    (source,) = spec.task.input_sources
    assert source.source.type == "inline"
    assert source.source.params["URL"].startswith("data:application/wasm;base64,AGFzbQ")
    assert params.entry_module == source.target == LEGACY_ENTRY_TARGET
    assert params.parameters == [] and params.environment_variables == {}
    assert params.import_modules == []
    modern = corpus_spec("wasm.yaml")
    assert source.source == modern.task.input_sources[0].source


def test_hello_world_and_log_emitter() -> None:
    hello = corpus_spec("hello_world.yml")
    assert (hello.type, hello.count, docker(hello).parameters[-1]) == (
        "batch",
        1,
        "echo hello bacalhau world",
    )
    emitter = corpus_spec("log_emitter.yml")
    assert emitter.task.publisher.type == "local"
    assert "while [ $x -le 10 ]" in docker(emitter).parameters[1]


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_job_updates_by_name(version: str) -> None:
    hello = corpus_spec(f"19-basic-hello-world-{version}.yml")
    assert (hello.name, hello.type, hello.count) == ("basic-hello-world", "batch", 2)
    daemon = corpus_spec(f"19-basic-daemon-job-{version}.yml")
    assert (daemon.name, daemon.type, daemon.count) == ("basic-daemon-job", "daemon", None)
    assert f"IAmDaemonJobStart{version.upper()}" in docker(daemon).parameters[1]


def test_sqs_proxy_service_with_host_network() -> None:
    spec = corpus_spec("sqs-proxy.yaml")
    assert (spec.type, spec.count) == ("service", 1)
    assert spec.task.network.type == "Host"
    (port,) = spec.task.network.ports
    assert (port.name, port.static) == ("http", 8080)
    assert spec.task.env["SQS_QUEUE_URL"] == REQUIRED_VARIABLES["sqs-proxy.yaml"]["queue_url"]
    assert spec.task.env["AWS_ACCESS_KEY_ID"] == "env:AWS_ACCESS_KEY_ID"
    assert [(c.key, c.operator, c.values) for c in spec.constraints] == [
        ("type", "=", ["web-services"])
    ]


def test_sqs_puller() -> None:
    spec = corpus_spec("sqs-puller.yaml")
    assert (spec.type, spec.count, spec.task.network.type) == ("service", 1, "None")
    assert docker(spec).image.endswith("sqs-puller:latest")


def test_deploy_eu_templated_count_and_tiny_resources() -> None:
    spec = corpus_spec("deploy-eu-v1.yaml")
    assert (spec.name, spec.type, spec.count) == ("sqs-publisher-eu", "batch", 3)
    assert [(c.key, c.values) for c in spec.constraints] == [("type", ["edge"]), ("region", ["eu"])]
    assert spec.labels == {"sqs-publisher": "eu"}
    params = WasmParams.model_validate(spec.task.engine.params)
    assert params.entry_module == "/app/modules/publisher.wasm"
    assert "--color=#0000FF" in params.parameters  # the YAML comment after it is not part of it
    assert spec.task.resources.cpu_millis == 1
    assert spec.task.resources.memory_bytes == 36_000_000
    assert spec.task.timeouts.queue_timeout == 300
    assert spec.task.env == {"HOSTNAME": "env:HOSTNAME"}
    assert corpus_spec("deploy-eu-v1.yaml", count="7").count == 7


def test_deploy_eu_refuses_a_bad_count() -> None:
    with pytest.raises(InvalidSpec) as info:
        corpus_spec("deploy-eu-v1.yaml", count="0")
    assert [p.path for p in info.value.problems] == ["Count"]


def test_config_reader_default_and_override() -> None:
    spec = corpus_spec("config-reader.yaml")
    assert (spec.type, spec.count) == ("ops", None)
    params = WasmParams.model_validate(spec.task.engine.params)
    assert params.parameters == ["--config=/app/config.yaml"]
    (source,) = spec.task.input_sources
    assert source.source.params == {"SourcePath": "/app/"}  # ReadWrite false is the default
    assert source.target == "/app"
    other = corpus_spec("config-reader.yaml", config="/etc/x.yaml")
    assert WasmParams.model_validate(other.task.engine.params).parameters == [
        "--config=/etc/x.yaml"
    ]


def test_log_generator_daemon() -> None:
    spec = corpus_spec("log-generator.yaml")
    assert (spec.type, spec.count, spec.namespace) == ("daemon", None, "logging")
    assert [(c.key, c.operator, c.values) for c in spec.constraints] == [
        ("service", "=", ["WebService"])
    ]
    assert spec.task.input_sources[0].source.params == {
        "SourcePath": "/data/log-orchestration/logs",
        "ReadWrite": True,
    }
    assert docker(spec).parameters[:2] == ["--rate", "10"]


def test_ops_job_optional_variables() -> None:
    spec = corpus_spec("ops-job.yaml")
    assert (spec.type, spec.count, spec.namespace) == ("ops", None, "logging")
    assert docker(spec).parameters == ["--query", "SELECT 1", "--start-time", "", "--end-time", ""]
    timed = corpus_spec("ops-job.yaml", **{"start-time": "2024-01-01", "end-time": "12:30"})
    assert docker(timed).parameters[3::2] == ["2024-01-01", "12:30"]


def test_error_analysis_templated_s3_input() -> None:
    spec = corpus_spec("error-analysis.yaml")
    assert (spec.type, spec.count, spec.namespace) == ("batch", 1, "logging")
    (source,) = spec.task.input_sources
    assert source.source.params == {
        "Bucket": "logs-bucket",
        "Key": "nginx/",
        "Filter": ".*",
        "Region": "eu-west-1",
    }
    query = docker(spec).parameters[1]
    assert query.startswith("SELECT request, COUNT(*) AS error_count FROM logs WHERE status = 404")
    assert query.endswith("LIMIT 10;\n")
    patterned = corpus_spec("error-analysis.yaml", AccessLogPattern="access.*")
    assert patterned.task.input_sources[0].source.params["Filter"] == "access.*"


def test_data_generator() -> None:
    spec = corpus_spec("data-generator.yaml")
    assert (spec.type, spec.count, spec.namespace) == ("ops", None, "demo")
    assert [(c.key, c.operator, c.values) for c in spec.constraints] == [("region", "=", ["us"])]
    params = docker(spec).parameters
    assert params[params.index("--count") + 1] == "3000"
    assert params[params.index("--start-date") + 1] == "2024-01-01"
    publisher = S3Publisher.model_validate(spec.task.publisher.params)
    assert (publisher.bucket, publisher.key, publisher.encoding) == (
        "my-bucket",
        "transactions/{nodeID}/",
        "plain",
    )
    assert publisher.endpoint == "http://storage-local:9000"
    assert spec.task.resources.cpu_millis == 1000
    assert spec.task.resources.memory_bytes == 10**9
    assert spec.task.env == {"PYTHONUNBUFFERED": "1"}
    assert spec.task.result_paths[0].path == "/data"


def test_queueing_job_yaml() -> None:
    spec = corpus_spec("job.yaml")
    assert spec.name == ""
    assert (spec.type, spec.count, spec.priority) == ("batch", 1, 0)
    assert spec.task.publisher.type == ""
    assert spec.task.network.type == "None"
    assert spec.task.timeouts.execution_timeout == 600
    assert spec.task.timeouts.queue_timeout == 600
    assert spec.constraints == []
    assert spec.labels == {"purpose": "bacalhau-queuing-example"}
    assert docker(spec).parameters == ["--cpu", "2", "--timeout", "60"]
    assert "WorkingDirectory" not in spec.task.engine.params  # "" is the default


def test_template_job_publish() -> None:
    spec = corpus_spec("template-job-publish.yaml")
    assert (spec.type, spec.count) == ("batch", 4)
    assert spec.task.name == "Perform yolo inference over data in a bucket"
    resources = spec.task.resources
    assert resources.cpu == "6000m" and resources.cpu_millis == 6000
    assert resources.memory_bytes == 26 * 10**9
    assert resources.disk_bytes == 25 * 10**9
    assert spec.task.network.type == "Full"
    local, url = spec.task.input_sources
    assert (local.source.type, local.target) == ("localDirectory", "/local_data")
    assert (url.source.type, url.target) == ("urlDownload", "/model")
    assert url.source.params == {"URL": "https://example.com/yolov5s.pt"}
    env = docker(spec).env()
    assert env["VIDEO_BUCKET_NAME"] == "videos"
    assert env["YOLO_WEIGHTS_PATH"] == "/model/yolov5s.pt"
    assert env["ADB_PASSWORD"] == "secret"
    publisher = S3Publisher.model_validate(spec.task.publisher.params)
    assert publisher.key == "yolo-results/{date}/{time}/{jobID}/{executionID}"
    assert spec.task.result_paths[0].path == "/results"


def test_template_job() -> None:
    spec = corpus_spec("template_job.yaml")
    assert (spec.namespace, spec.task.name) == ("science", "Run over share")
    assert docker(spec).env()["COMMAND"] == "cHJpbnQoMSk="
    assert docker(spec).env()["B64_ENCODED"] == "True"
    assert spec.task.input_sources[0].source.params == {"SourcePath": "/mnt/azureshare"}
    assert spec.task.resources.cpu_millis == 4000
    assert spec.task.resources.memory_bytes == 16 * 10**9


def test_sample_job_gpu() -> None:
    spec = corpus_spec("sample-job.yaml")
    assert (spec.name, spec.type, spec.count) == ("llama3-training-10", "ops", None)
    resources = spec.task.resources
    assert resources.gpu == "8" and resources.gpus == 8
    assert resources.cpu_millis == 32_000
    assert resources.memory_bytes == 640 * 10**9
    assert docker(spec).env() == {"MAX_STEPS": "10"}
    assert docker(spec).parameters == ["-c", "./run_training.sh\n"]
    assert spec.task.publisher.params["Bucket"] == "llama-results"
    assert spec.task.timeouts.execution_timeout == spec.task.timeouts.queue_timeout == 3600


# ---- the seeds ----------------------------------------------------------------------------------


def test_the_seed_has_four_examples() -> None:
    kinds = [re.search(r"^Type: (\w+)$", b, re.M) for b in seed_blocks()]
    assert [k.group(1) for k in kinds if k] == ["batch", "ops", "daemon", "service"]


@pytest.mark.parametrize("index", range(4))
def test_seed_params_are_under_engine_despite_the_indentation(index: int) -> None:
    """`Params:` sits at Type's indentation after a less-indented comment: still in Engine."""
    block = seed_blocks()[index]
    rendered = re.sub(r"\{\{[^}]*\}\}", "x", block)
    raw = parse_document(rendered)
    task = raw["Tasks"][0]
    assert set(task["Engine"]) == {"Type", "Params"}
    assert "Params" not in task
    assert "Image" in task["Engine"]["Params"]


def test_batch_seed() -> None:
    spec = seed("batch")
    assert (spec.name, spec.type, spec.count, spec.priority) == (
        "Batch Job Example",
        "batch",
        2,
        100,
    )
    assert spec.meta == {
        "Job purpose": "Provide detailed example of the batch job",
        "Meta purpose": "Describe the job",
    }
    assert spec.labels["Some option"] == "Some text"
    assert [(c.key, c.operator, c.values) for c in spec.constraints] == [
        ("Operating-System", "=", ["linux"])
    ]
    task = spec.task
    assert task.name == "Important Calculations"
    params = docker(spec)
    assert params.image == "alek5eyk/batchjobexample:1.1"
    assert params.entrypoint == []
    assert params.parameters == ["python", "supercalc.py", "5", "/outputs/result.txt"]
    assert params.env() == {"DEFAULT_USER_NAME": "root", "API_KEY": "none"}
    assert params.meta == {"Task goal": "show how to create declarative descriptions"}
    assert task.publisher.type == "ipfs"
    assert task.input_sources[0].source.params == {
        "CID": "QmSYE8dVx6RTdDFFhBu51JjFG1fwwPdUJoXZ4ZNXvfoK2V"
    }
    assert (task.resources.cpu_millis, task.resources.memory_bytes) == (250, 10**9)
    assert (task.resources.disk_bytes, task.resources.gpus) == (100 * 10**6, 0)
    assert task.network.type == "HTTP"
    assert task.network.domains == ["example.com", "ghcr.io"]
    assert (task.timeouts.queue_timeout, task.timeouts.total_timeout) == (101, 301)


def test_ops_seed() -> None:
    spec = seed("ops")
    assert (spec.name, spec.type, spec.count, spec.namespace) == (
        "Live logs processing",
        "ops",
        None,
        "logging",
    )
    assert docker(spec).parameters == [
        "--query",
        SEED_VARIABLES["query"],
        "--start-time",
        "",
        "--end-time",
        "",
    ]
    timed = seed("ops", **{"start-time": "10m", "end-time": "now"})
    assert docker(timed).parameters[3::2] == ["10m", "now"]
    assert spec.task.input_sources[0].source.type == "localDirectory"


def test_daemon_seed() -> None:
    spec = seed("daemon")
    assert (spec.name, spec.type, spec.count) == ("Logstash", "daemon", None)
    env = docker(spec).env()
    assert env["OPENSEARCH_ENDPOINT"] == SEED_VARIABLES["OpenSearchEndpoint"]
    assert env["S3_BUCKET"] == SEED_VARIABLES["AccessLogBucket"]
    assert env["AWS_REGION"] == SEED_VARIABLES["AWSRegion"]
    assert env["AGGREGATE_DURATION"] == "10"
    assert spec.task.network.type == "Full"
    assert spec.task.resources.memory_bytes == 10**9
    state = spec.task.input_sources[1]
    assert state.source.params == {"SourcePath": "/data/log-orchestration/state", "ReadWrite": True}


def test_service_seed() -> None:
    spec = seed("service")
    assert (spec.name, spec.type, spec.count, spec.namespace) == (
        "Kinesis Consumer",
        "service",
        1,
        "service",
    )
    assert [(c.key, c.values) for c in spec.constraints] == [
        ("Architecture", ["arm64"]),
        ("region", ["us-west-2"]),
    ]
    assert docker(spec).image == "my-kinesis-consumer:latest"
    assert spec.task.resources.memory_bytes == 4 * 10**9
    assert spec.task.network.type == "Full"


@pytest.mark.parametrize(
    ("kind", "needed"),
    [
        ("batch", set()),
        ("ops", {"query"}),
        ("daemon", {"query", "OpenSearchEndpoint", "AccessLogBucket", "AWSRegion"}),
        ("service", set()),
    ],
)
def test_seed_variables(kind: str, needed: set[str]) -> None:
    (block,) = [b for b in seed_blocks() if re.search(rf"^Type: {kind}$", b, re.M)]
    if not needed:
        assert load_spec(block, {}).type == kind
        return
    with pytest.raises(InvalidSpec) as info:
        load_spec(block, {})
    assert {re.findall(r'"([^"]+)"', p.message)[0] for p in info.value.problems} == needed


@pytest.mark.parametrize("kind", ["ops", "daemon"])
def test_seed_count_is_refused_for_ops_and_daemon(kind: str) -> None:
    (block,) = [b for b in seed_blocks() if re.search(rf"^Type: {kind}$", b, re.M)]
    with pytest.raises(InvalidSpec) as info:
        load_spec(block.replace(f"Type: {kind}\n", f"Type: {kind}\nCount: 2\n"), SEED_VARIABLES)
    assert [p.path for p in info.value.problems] == ["Count"]
