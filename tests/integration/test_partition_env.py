"""Wasm tasks learn their partition from the environment: a Count 3 batch job, a retried
partition, and an ops job, through a real orchestrator, agents and wasmtime."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import wasmtime

from compute.inputs import AllowedPath
from shared import wire
from shared.client import ShoalClient
from shared.natsserver import EmbeddedNats
from tests.integration.stack import stack

WASI = "wasi_snapshot_preview1"

# Prints its NUL-separated environment, then tries to create `tried` in its first preopened
# folder (fd 3) with O_CREAT|O_EXCL: the one run that creates it exits 1, every other run
# (and every run without such a folder) exits 0. So with a shared writable folder, exactly
# one partition fails once and is retried.
ENV_THEN_FAIL_ONCE = f"""(module
  (import "{WASI}" "environ_sizes_get" (func $sizes (param i32 i32) (result i32)))
  (import "{WASI}" "environ_get" (func $get (param i32 i32) (result i32)))
  (import "{WASI}" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "{WASI}" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "{WASI}" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 200) "tried")
  (func (export "_start")
    (drop (call $sizes (i32.const 0) (i32.const 4)))
    (drop (call $get (i32.const 256) (i32.const 2048)))
    (i32.store (i32.const 8) (i32.const 2048))
    (i32.store (i32.const 12) (i32.load (i32.const 4)))
    (drop (call $write (i32.const 1) (i32.const 8) (i32.const 1) (i32.const 16)))
    (call $exit (i32.eqz (call $open (i32.const 3) (i32.const 0) (i32.const 200) (i32.const 5)
      (i32.const 5) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 20))))))"""


def env_job(
    name: str, *, type: str = "batch", count: int | None = 3, state: Path | None = None
) -> dict[str, Any]:
    wasm = base64.b64encode(bytes(wasmtime.wat2wasm(ENV_THEN_FAIL_ONCE))).decode()
    inputs: list[dict[str, Any]] = [
        {
            "Source": {"Type": "inline", "Params": {"URL": f"data:application/wasm;base64,{wasm}"}},
            "Target": "/app/env.wasm",
        }
    ]
    if state is not None:
        inputs.append(
            {
                "Source": {
                    "Type": "localDirectory",
                    "Params": {"SourcePath": str(state), "ReadWrite": True},
                },
                "Target": "/state",
            }
        )
    task = {
        "Name": "main",
        "Engine": {
            "Type": "wasm",
            "Params": {
                "EntryModule": "/app/env.wasm",
                # A Bacalhau name in the engine's variables does not win either.
                "EnvironmentVariables": {"BACALHAU_PARTITION_INDEX": "42", "FROM_PARAMS": "p"},
            },
        },
        # The task's own Env cannot make it another partition.
        "Env": {"SHOAL_PARTITION_INDEX": "99", "SHOAL_PARTITION_COUNT": "99", "KEEP": "yes"},
        "InputSources": inputs,
        "Timeouts": {"ExecutionTimeout": 30},
    }
    spec: dict[str, Any] = {"Name": name, "Type": type, "Tasks": [task]}
    if count is not None:
        spec["Count"] = count
    return spec


async def environments(
    client: ShoalClient, job_id: str
) -> list[tuple[wire.ExecutionView, dict[str, str]]]:
    """Every execution with the environment its module printed."""
    out = []
    for execution in await client.executions(job_id):
        data = b"".join(
            [
                line.data
                async for line in client.logs(job_id, execution_id=execution.id)
                if line.stream == "stdout"
            ]
        )
        pairs = [item.decode().partition("=") for item in data.split(b"\0") if item]
        out.append((execution, {k: v for k, _, v in pairs}))
    return out


def check_identity(execution: wire.ExecutionView, env: dict[str, str], job: str) -> None:
    assert env["SHOAL_EXECUTION_ID"] == env["BACALHAU_EXECUTION_ID"] == execution.id
    assert env["SHOAL_NODE_ID"] == execution.node_id
    assert env["SHOAL_JOB_ID"] == env["BACALHAU_JOB_ID"]
    assert env["SHOAL_JOB_NAME"] == job
    assert env["SHOAL_JOB_NAMESPACE"] == "default"
    assert env["SHOAL_JOB_VERSION"] == "1"
    assert (env["KEEP"], env["FROM_PARAMS"]) == ("yes", "p")


async def test_each_partition_sees_its_own_index_and_the_count(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with stack(nats_server.url, tmp_path) as s, await s.client() as client:
        job_id = await client.submit(env_job("parts"))
        view = await client.wait(job_id, timeout=60)
        assert view.state == "Completed", view
        runs = await environments(client, job_id)
    assert sorted(e.partition for e, _ in runs) == [0, 1, 2]
    for execution, env in runs:
        index = str(execution.partition)
        assert env["SHOAL_PARTITION_INDEX"] == env["BACALHAU_PARTITION_INDEX"] == index
        assert env["SHOAL_PARTITION_COUNT"] == env["BACALHAU_PARTITION_COUNT"] == "3"
        assert env["SHOAL_JOB_TYPE"] == env["BACALHAU_JOB_TYPE"] == "batch"
        assert env["SHOAL_JOB_ID"] == job_id
        check_identity(execution, env, "parts")


async def test_a_retried_partition_keeps_its_index(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    allowed = (AllowedPath(state.resolve(), writable=True),)
    async with (
        stack(nats_server.url, tmp_path, allow_local_paths=allowed) as s,
        await s.client() as client,
    ):
        job_id = await client.submit(env_job("retried", state=state))
        view = await client.wait(job_id, timeout=60)
        assert view.state == "Completed", view
        runs = await environments(client, job_id)
    [(failed, first)] = [(e, env) for e, env in runs if e.compute_state == "failed"]
    [(retry, again)] = [
        (e, env) for e, env in runs if e.partition == failed.partition and e.attempt == 2
    ]
    assert retry.compute_state == "completed"
    assert first["SHOAL_PARTITION_INDEX"] == again["SHOAL_PARTITION_INDEX"] == str(failed.partition)
    assert again["BACALHAU_PARTITION_INDEX"] == str(failed.partition)
    assert first["SHOAL_EXECUTION_ID"] != again["SHOAL_EXECUTION_ID"]
    assert sorted(e.partition for e, _ in runs if e.compute_state == "completed") == [0, 1, 2]
    for execution, env in runs:
        assert env["SHOAL_PARTITION_COUNT"] == "3"
        check_identity(execution, env, "retried")


async def test_an_ops_job_is_not_partitioned(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    async with stack(nats_server.url, tmp_path) as s, await s.client() as client:
        job_id = await client.submit(env_job("everywhere", type="ops", count=None))
        view = await client.wait(job_id, timeout=60)
        assert view.state == "Completed", view
        runs = await environments(client, job_id)
    assert sorted(e.node_id for e, _ in runs) == ["node-0", "node-1"]
    for execution, env in runs:
        assert (env["SHOAL_PARTITION_INDEX"], env["SHOAL_PARTITION_COUNT"]) == ("0", "0")
        assert (env["BACALHAU_PARTITION_INDEX"], env["BACALHAU_PARTITION_COUNT"]) == ("0", "0")
        assert env["SHOAL_JOB_TYPE"] == "ops"
        check_identity(execution, env, "everywhere")
