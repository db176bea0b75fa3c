"""Docker tasks learn their partition from the environment: examples/partitions.yaml, and a
retried partition whose own Env and EnvironmentVariables try to say otherwise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from compute.inputs import AllowedPath
from shared.client import ShoalClient
from shared.natsserver import EmbeddedNats
from tests.e2e.docker_stack import IMAGE, docker_stack

pytestmark = pytest.mark.docker

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "partitions.yaml"


async def stdout_of(client: ShoalClient, job_id: str, execution_id: str) -> str:
    lines = client.logs(job_id, execution_id=execution_id)
    return b"".join([x.data async for x in lines if x.stream == "stdout"]).decode()


async def test_the_example_splits_its_items_by_partition(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with (
        docker_stack(nats_server.url, tmp_path, agents=2, engines=("docker",)) as s,
        await s.client() as client,
    ):
        job_id = await client.submit(EXAMPLE.read_text())
        view = await client.wait(job_id, timeout=90)
        assert view.state == "Completed", view
        executions = await client.executions(job_id)
        assert sorted(e.partition for e in executions) == [0, 1, 2]
        for e in executions:
            items = " ".join(str(x) for x in range(e.partition, 12, 3))
            expected = f"partition {e.partition} of 3 on {e.node_id}: items {items}\n"
            assert await stdout_of(client, job_id, e.id) == expected


# `env`, then the one run that makes /state/tried (mkdir is atomic) fails; the others pass.
FAIL_ONCE = "env; mkdir /state/tried 2>/dev/null && exit 1; exit 0"


def retried_job(state: Path) -> dict[str, Any]:
    return {
        "Name": "docker-retried",
        "Type": "batch",
        "Count": 3,
        "Tasks": [
            {
                "Engine": {
                    "Type": "docker",
                    "Params": {
                        "Image": IMAGE,
                        "Entrypoint": ["/bin/sh", "-c"],
                        "Parameters": [FAIL_ONCE],
                        "EnvironmentVariables": ["SHOAL_PARTITION_INDEX=42", "FROM_PARAMS=p"],
                    },
                },
                "Env": {"BACALHAU_PARTITION_INDEX": "99", "SHOAL_JOB_ID": "mine", "KEEP": "yes"},
                "InputSources": [
                    {
                        "Source": {
                            "Type": "localDirectory",
                            "Params": {"SourcePath": str(state), "ReadWrite": True},
                        },
                        "Target": "/state",
                    }
                ],
                "Timeouts": {"ExecutionTimeout": 60},
            }
        ],
    }


async def test_a_retried_partition_keeps_its_index_and_shoal_has_the_last_word(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    allowed = (AllowedPath(state.resolve(), writable=True),)
    async with (
        docker_stack(
            nats_server.url, tmp_path, agents=2, engines=("docker",), allow_local_paths=allowed
        ) as s,
        await s.client() as client,
    ):
        job_id = await client.submit(retried_job(state))
        view = await client.wait(job_id, timeout=90)
        assert view.state == "Completed", view
        runs = []
        for e in await client.executions(job_id):
            lines = (await stdout_of(client, job_id, e.id)).splitlines()
            runs.append((e, dict(line.partition("=")[::2] for line in lines if "=" in line)))
    [failed] = [e for e, _ in runs if e.compute_state == "failed"]
    again = [env for e, env in runs if e.partition == failed.partition]
    assert len(again) == 2  # the failed run and its retry
    assert sorted(e.partition for e, _ in runs if e.compute_state == "completed") == [0, 1, 2]
    for e, env in runs:
        assert env["SHOAL_PARTITION_INDEX"] == env["BACALHAU_PARTITION_INDEX"] == str(e.partition)
        assert env["SHOAL_PARTITION_COUNT"] == env["BACALHAU_PARTITION_COUNT"] == "3"
        assert env["SHOAL_JOB_ID"] == env["BACALHAU_JOB_ID"] == job_id
        assert env["SHOAL_EXECUTION_ID"] == env["BACALHAU_EXECUTION_ID"] == e.id
        assert env["SHOAL_JOB_TYPE"] == env["BACALHAU_JOB_TYPE"] == "batch"
        assert (env["SHOAL_JOB_NAME"], env["SHOAL_JOB_NAMESPACE"]) == ("docker-retried", "default")
        assert (env["SHOAL_JOB_VERSION"], env["SHOAL_NODE_ID"]) == ("1", e.node_id)
        assert (env["KEEP"], env["FROM_PARAMS"]) == ("yes", "p")
