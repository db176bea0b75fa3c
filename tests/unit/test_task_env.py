"""The variables every task gets (partition, job, execution, node), and that they win over the
task's own Env and its engine's EnvironmentVariables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

import msgspec
import pytest

from compute.engines.base import Engine, RunRequest, RunResult
from compute.executor import Execution, run_execution
from compute.logs import LogShipper
from compute.task_env import RESERVED, system_env, task_environment, without_reserved
from shared import wire
from shared.spec import JobSpec, load_spec
from shared.spec.params import DockerParams, NoopParams, WasmParams

REPO = Path(__file__).resolve().parents[2]


def _spec(type: str = "batch", count: int | None = 3, **task: Any) -> JobSpec:
    data: dict[str, Any] = {
        "Name": "parts",
        "Type": type,
        "Namespace": "team-a",
        "Tasks": [{"Engine": {"Type": "noop"}, **task}],
    }
    if count is not None:
        data["Count"] = count
    return JobSpec.model_validate(data)


def _order(spec: JobSpec, partition: int = 0, attempt: int = 1) -> wire.ExecutionOrder:
    return wire.ExecutionOrder(
        execution_id=f"e-{partition}-{attempt}",
        job_id="j-1",
        job_type=spec.type,
        namespace=spec.namespace,
        job_version=2,
        partition=partition,
        attempt=attempt,
        spec=msgspec.Raw(spec.model_dump_json(by_alias=True).encode()),
    )


def test_a_batch_partition_sees_its_index_the_count_and_who_it_is() -> None:
    spec = _spec()
    assert system_env(_order(spec, partition=2), spec, "node-7") == {
        "SHOAL_PARTITION_INDEX": "2",
        "SHOAL_PARTITION_COUNT": "3",
        "SHOAL_JOB_ID": "j-1",
        "SHOAL_JOB_NAME": "parts",
        "SHOAL_JOB_NAMESPACE": "team-a",
        "SHOAL_JOB_TYPE": "batch",
        "SHOAL_JOB_VERSION": "2",
        "SHOAL_EXECUTION_ID": "e-2-1",
        "SHOAL_NODE_ID": "node-7",
        # Bacalhau's five, with the same values
        "BACALHAU_PARTITION_INDEX": "2",
        "BACALHAU_PARTITION_COUNT": "3",
        "BACALHAU_JOB_ID": "j-1",
        "BACALHAU_JOB_TYPE": "batch",
        "BACALHAU_EXECUTION_ID": "e-2-1",
    }
    assert set(system_env(_order(spec), spec, "n")) == RESERVED


def test_a_retry_keeps_the_partition_and_gets_its_own_execution_id() -> None:
    spec = _spec()
    first = system_env(_order(spec, partition=1, attempt=1), spec, "node-0")
    retry = system_env(_order(spec, partition=1, attempt=2), spec, "node-1")
    assert first["SHOAL_PARTITION_INDEX"] == retry["SHOAL_PARTITION_INDEX"] == "1"
    assert first["SHOAL_EXECUTION_ID"] != retry["SHOAL_EXECUTION_ID"]


@pytest.mark.parametrize(
    ("type", "count", "partition", "index", "total"),
    [
        ("service", 2, 1, "1", "2"),  # a replica's number
        ("ops", None, 0, "0", "0"),  # not partitioned: every node runs the whole task
        ("daemon", None, 0, "0", "0"),
    ],
)
def test_partition_values_of_each_job_type(
    type: str, count: int | None, partition: int, index: str, total: str
) -> None:
    spec = _spec(type, count)
    env = system_env(_order(spec, partition), spec, "node-3")
    assert (env["SHOAL_PARTITION_INDEX"], env["SHOAL_PARTITION_COUNT"]) == (index, total)
    assert (env["BACALHAU_PARTITION_INDEX"], env["BACALHAU_PARTITION_COUNT"]) == (index, total)
    assert (env["SHOAL_JOB_TYPE"], env["SHOAL_NODE_ID"]) == (type, "node-3")


def test_shoals_values_win_over_the_tasks_env() -> None:
    spec = _spec(
        Env={"SHOAL_PARTITION_INDEX": "9", "BACALHAU_JOB_ID": "mine", "KEEP": "yes"},
    )
    env = task_environment(_order(spec, partition=1), spec, "node-0")
    assert env["SHOAL_PARTITION_INDEX"] == "1"
    assert env["BACALHAU_JOB_ID"] == "j-1"
    assert env["KEEP"] == "yes"


def test_reserved_names_leave_the_engines_environment_variables() -> None:
    spec = _spec()
    order = _order(spec)
    docker = DockerParams.model_validate(
        {"Image": "x", "EnvironmentVariables": ["SHOAL_NODE_ID = n", "BACALHAU_JOB_TYPE=x", "A=1"]}
    )
    assert cast(DockerParams, without_reserved(docker, order)).env() == {"A": "1"}
    wasm = WasmParams.model_validate(
        {"EntryModule": "/m.wasm", "EnvironmentVariables": {"SHOAL_JOB_ID": "x", "B": "2"}}
    )
    assert cast(WasmParams, without_reserved(wasm, order)).environment_variables == {"B": "2"}
    # Names Shoal does not set go through, under either prefix.
    other = WasmParams.model_validate(
        {"EntryModule": "/m.wasm", "EnvironmentVariables": {"SHOAL_NATS_URL": "nats://x"}}
    )
    assert without_reserved(other, order) is other
    noop = NoopParams.model_validate({})
    assert without_reserved(noop, order) is noop


class _Recording(Engine):
    name = "noop"
    writes_files = False

    def __init__(self) -> None:
        self.requests: list[RunRequest] = []

    async def probe(self) -> bool:
        return True

    async def run(self, request: RunRequest) -> RunResult:
        self.requests.append(request)
        return RunResult(exit_code=0)


class _NoLogs:
    interval = 60.0

    async def follow(self) -> None:
        return None

    def stop(self) -> None:
        return None

    async def ship(self) -> None:
        return None


async def test_the_executor_hands_every_engine_the_variables(tmp_path: Path) -> None:
    spec = _spec(Env={"SHOAL_PARTITION_COUNT": "99", "KEEP": "yes"})
    engine = _Recording()
    reports: list[wire.ExecutionUpdate] = []

    async def report(update: wire.ExecutionUpdate) -> None:
        reports.append(update)

    await run_execution(
        Execution(_order(spec, partition=2, attempt=3), spec),
        node_id="node-5",
        engine=engine,
        workdir=tmp_path / "e",
        allowed=(),
        report=report,
        ship_logs=lambda path, stream: cast(LogShipper, _NoLogs()),
    )
    assert reports[-1].state == "completed"
    [request] = engine.requests
    assert request.env["SHOAL_PARTITION_INDEX"] == request.env["BACALHAU_PARTITION_INDEX"] == "2"
    assert request.env["SHOAL_PARTITION_COUNT"] == "3"
    assert request.env["SHOAL_NODE_ID"] == "node-5"
    assert request.env["KEEP"] == "yes"


def test_the_protocol_table_names_every_variable() -> None:
    text = (REPO / "docs" / "protocol.md").read_text()
    assert text.count("<!-- task-env -->") == 1
    rows = []
    for line in text.split("<!-- task-env -->")[1].lstrip("\n").splitlines()[2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip().strip("`") for c in line.strip("|").split("|")])
    named = {r[0] for r in rows} | {r[1] for r in rows if r[1]}
    assert named == RESERVED
    assert all(r[1] == "BACALHAU_" + r[0].removeprefix("SHOAL_") for r in rows if r[1])


def test_the_example_shares_its_work_out_by_partition() -> None:
    spec = load_spec((REPO / "examples" / "partitions.yaml").read_text())
    assert (spec.type, spec.count, spec.task.engine.type) == ("batch", 3, "docker")
    script = spec.task.engine.params["Parameters"][0]
    assert "$SHOAL_PARTITION_INDEX" in script
    assert "SHOAL_PARTITION_COUNT" in script


def test_shoal_variables_are_never_read_from_the_agents_environment() -> None:
    from compute.engines.docker_config import task_env

    env = task_env({"SHOAL_JOB_NAME": "env:HOME", "MINE": "env:HOME"})
    assert env["SHOAL_JOB_NAME"] == "env:HOME"  # a job really named so
    assert env["MINE"] == os.environ["HOME"]
