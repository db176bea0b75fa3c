"""The seed examples and the Bacalhau compatibility corpus: every real spec parses as Bacalhau's."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from shared.errors import InvalidSpec
from shared.spec import JobSpec, load_spec, parse_document, spec_from_data
from shared.spec.normalize import LEGACY_ENTRY_TARGET
from shared.spec.params import DockerParams, S3Publisher, WasmParams

SHARED = Path(__file__).resolve().parents[3] / "shared"  # ../shared next to the repository
CORPUS = SHARED / "compat" / "bacalhau-specs"
SEEDS = SHARED / "seeds" / "bacalhau-job-types.md"

CORPUS_FILES = sorted(p.name for p in CORPUS.iterdir() if p.name != "SOURCES.md")

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


def corpus_text(name: str) -> str:
    return (CORPUS / name).read_text(encoding="utf-8")


def corpus_spec(name: str, **extra: str) -> JobSpec:
    return load_spec(corpus_text(name), {**REQUIRED_VARIABLES.get(name, {}), **extra}, source=name)


def seed_blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", SEEDS.read_text(encoding="utf-8"), re.S)


def seed(kind: str, **extra: str) -> JobSpec:
    (block,) = [b for b in seed_blocks() if re.search(rf"^Type: {kind}$", b, re.M)]
    return load_spec(block, {**SEED_VARIABLES, **extra}, source=f"seed {kind}")


def docker(spec: JobSpec) -> DockerParams:
    assert spec.task.engine.type == "docker"
    return DockerParams.model_validate(spec.task.engine.params)


# ---- the corpus as a whole ----------------------------------------------------------------------


def test_the_corpus_is_there() -> None:
    assert len(CORPUS_FILES) >= 30
    templated = {n for n in CORPUS_FILES if "{{" in corpus_text(n)}
    assert templated == set(REQUIRED_VARIABLES)


@pytest.mark.parametrize("name", CORPUS_FILES)
def test_every_corpus_file_validates(name: str) -> None:
    spec = corpus_spec(name)
    assert spec.type in ("batch", "ops", "daemon", "service")
    assert len(spec.tasks) == 1
    assert spec.id is None
    if spec.type in ("batch", "service"):
        assert spec.count is not None and spec.count >= 1
    else:
        assert spec.count is None


@pytest.mark.parametrize("name", CORPUS_FILES)
def test_corpus_specs_round_trip_through_their_canonical_form(name: str) -> None:
    """The orchestrator stores `dump()` and re-reads it with `spec_from_data`."""
    spec = corpus_spec(name)
    dumped = spec.dump()
    again = spec_from_data(json.loads(json.dumps(dumped)))
    assert again == spec
    assert again.dump() == dumped


@pytest.mark.parametrize("name", CORPUS_FILES)
def test_corpus_yaml_keys_may_be_any_case(name: str) -> None:
    """Bacalhau decodes keys case-insensitively; so do we, in any mix."""
    spec = corpus_spec(name)
    data = spec.dump()

    def recase(value: Any, upper: bool) -> Any:
        if isinstance(value, dict):
            return {
                (k.upper() if upper else k.lower()): recase(v, not upper) for k, v in value.items()
            }
        if isinstance(value, list):
            return [recase(v, upper) for v in value]
        return value

    # Params of unknown engines are opaque: their keys are data and must keep their case.
    engine = data["Tasks"][0]["Engine"]
    opaque = engine["Type"] not in ("docker", "wasm", "noop")
    recased = recase(data, upper=True)
    task_key = next(k for k in recased if k.lower() == "tasks")
    task = recased[task_key][0]
    engine_key = next(k for k in task if k.lower() == "engine")
    params_key = next(k for k in task[engine_key] if k.lower() == "params")
    if opaque:
        task[engine_key][params_key] = engine["Params"]
    publisher = data["Tasks"][0]["Publisher"]
    if publisher["Type"] not in ("", "s3", "local", "ipfs", "noop", "nats"):
        pub_key = next(k for k in task if k.lower() == "publisher")
        task[pub_key] = publisher
    assert spec_from_data(recased) == spec


@pytest.mark.parametrize("name", sorted(n for n, v in REQUIRED_VARIABLES.items() if v))
def test_templated_corpus_files_need_their_variables(name: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        load_spec(corpus_text(name), {}, source=name)
    missing = set()
    for problem in info.value.problems:
        match = re.search(r'template variable "([^"]+)" is not set', problem.message)
        assert match, problem
        assert problem.path.startswith("line ")
        missing.add(match.group(1))
    assert missing == set(REQUIRED_VARIABLES[name])
    assert str(info.value).startswith(f"{name}: ")


@pytest.mark.parametrize("name", sorted(n for n, v in REQUIRED_VARIABLES.items() if len(v) > 1))
def test_one_missing_variable_is_named_alone(name: str) -> None:
    variables = dict(REQUIRED_VARIABLES[name])
    dropped = sorted(variables).pop()
    del variables[dropped]
    with pytest.raises(InvalidSpec) as info:
        load_spec(corpus_text(name), variables)
    names = {re.findall(r'"([^"]+)"', p.message)[0] for p in info.value.problems}
    assert names == {dropped}


# ---- unknown types: accepted now, refused by the scheduler --------------------------------------


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
