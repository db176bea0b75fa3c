"""Why a job did not run, or still waits, where the user looks: its StateMessage (what
`describe` and `job run --wait` print) names each distinct refusal with the nodes that gave it,
and a service shows how many of its replicas run."""

from __future__ import annotations

from pathlib import Path

import yaml

from compute.inputs import AllowedPath
from shared.client import ShoalClient
from shared.natsserver import EmbeddedNats
from shared.views import state_line
from shared.wire import JobView
from tests.conftest import eventually
from tests.integration.helpers_jobs import constraint, noop_job, run_cli
from tests.integration.stack import stack


def _write(tmp_path: Path, name: str, spec: dict[str, object]) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


async def test_a_job_no_node_takes_says_what_each_node_said(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    nothing = (
        f"local path {data} is not under an allowed directory "
        "(allowed: none; start the agent with --allow-local-path)"
    )
    read_only = f"local path {data} is allowed read-only on this node, but the job asks ReadWrite"
    said = f'3 nodes declined: "{nothing}" (node-0, node-1); "{read_only}" (node-2)'
    source = {"Type": "localDirectory", "Params": {"SourcePath": str(data), "ReadWrite": True}}
    spec = noop_job("local-rw", inputs=[{"Source": source, "Target": "/data"}])
    async with (
        stack(nats_server.url, tmp_path, agents=2, allow_local_paths=()) as s,
        await s.client() as client,
    ):
        await s.add_agent("node-2", allow_local_paths=(AllowedPath.parse(str(data)),))
        view = await client.wait(await client.submit(spec), timeout=20)
        assert view.state == "Failed", view
        assert said in view.state_message, view.state_message

        # The CLI prints it whole: at the end of `job run`, and in `describe`.
        ran = await run_cli(
            "job", "run", str(_write(tmp_path, "rw", {**spec, "Name": "local-rw-cli"})),
            url=nats_server.url,
        )  # fmt: skip
        assert ran.code == 3, ran
        assert said in ran.stderr, ran
        described = await run_cli("job", "describe", view.id, url=nats_server.url)
        assert described.code == 0, described
        assert said in " ".join(described.stdout.split()), described


async def _waiting(client: ShoalClient, job_id: str) -> JobView | None:
    view = await client.describe(job_id)
    return view if view.state_message else None


async def test_a_service_no_node_matches_says_why_with_its_replicas(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    mars = [constraint("region", "=", "mars")]
    spec = noop_job("mars", type="service", count=2, sleep="forever", constraints=mars)
    why = "waiting for nodes: does not match constraint region = mars (2 nodes: node-0, node-1)"
    async with stack(nats_server.url, tmp_path) as s, await s.client() as client:
        job_id = await client.submit(spec)
        view = await eventually(lambda: _waiting(client, job_id), what="a reason to wait")
        assert view.state == "Running" and view.state_message == why, view
        assert state_line(view) == f"Running 0/2: {why}"


async def test_a_wait_that_times_out_says_why_the_job_waits(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    spec = noop_job(
        "mars-cli", type="service", count=2, sleep="forever",
        constraints=[constraint("region", "=", "mars")],
    )  # fmt: skip
    why = "waiting for nodes: does not match constraint region = mars (2 nodes: node-0, node-1)"
    async with stack(nats_server.url, tmp_path):
        done = await run_cli(
            "job", "run", str(_write(tmp_path, "mars", spec)), "--wait-timeout", "2",
            url=nats_server.url,
        )  # fmt: skip
        assert done.code == 4, done
        assert f"(Running 0/2: {why})" in done.stderr, done
