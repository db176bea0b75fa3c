"""`shoal compute`'s engine options as an operator gives them: with no --engines it advertises
every engine that works on the host (docker when a daemon answers, and says why in its log when
none does; wasm and noop always); --image-pull, --image-pull-timeout and --registry-auth reach
the docker engine, and a bad value stops the command at once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from compute.engines.docker import DockerEngine
from orchestrator.service import Orchestrator, OrchestratorConfig
from shared.bus import Bus
from shared.client import ShoalClient
from shared.natsserver import EmbeddedNats
from tests.conftest import eventually, require, terminate
from tests.e2e.registry import login, push, registry, untag

SHOAL = Path(sys.executable).parent / "shoal"
FAST = OrchestratorConfig(heartbeat_interval=0.2, disconnect_timeout=2.0, bid_timeout=2.0)


@contextlib.asynccontextmanager
async def compute_process(
    url: str, tmp: Path, name: str, env: dict[str, str], *args: str
) -> AsyncIterator[Path]:
    """`shoal compute --name NAME ARGS` as an operator would start it: no --engines."""
    log = tmp / f"{name}.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            str(SHOAL),
            "--nats",
            url,
            "compute",
            "--name",
            name,
            "--heartbeat-interval",
            "0.2",
            "--state-dir",
            str(tmp / "state"),
            *args,
            stdout=out,
            stderr=out,
            env={**os.environ, **env},
        )
    try:
        yield log
    finally:
        await terminate(proc)
        assert proc.returncode == 0, log.read_text()


async def engines_of(url: str, tmp: Path, name: str, env: dict[str, str]) -> tuple[list[str], str]:
    """The engines the node registers with, and its log."""
    bus = await Bus.connect(url, name="orchestrator")
    try:
        async with (
            Orchestrator(bus, FAST),
            compute_process(url, tmp, name, env) as log,
            await ShoalClient.connect(url) as client,
        ):

            async def registered() -> list[str] | None:
                nodes = {n.id: n for n in await client.nodes()}
                return sorted(nodes[name].engines) if name in nodes else None

            engines = await eventually(registered, timeout=30, what=f"node {name} registered")
    finally:
        await bus.close()
    return engines, log.read_text()


@pytest.mark.docker
async def test_docker_is_advertised_by_default_where_a_daemon_answers(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    await need_docker()
    engines, log = await engines_of(nats_server.url, tmp_path, "with-docker", {})
    assert engines == ["docker", "noop", "wasm"], log
    assert "(engines: docker, noop, wasm)" in log, log


@contextlib.asynccontextmanager
async def silent_socket(path: Path) -> AsyncIterator[None]:
    """A unix socket that accepts and never answers: a docker daemon that hangs."""
    writers: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)

    server = await asyncio.start_unix_server(hold, str(path))
    try:
        yield
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await server.wait_closed()


async def test_without_docker_the_log_says_why(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    socket = tmp_path / "docker.sock"
    async with silent_socket(socket):
        engines, log = await engines_of(
            nats_server.url, tmp_path, "no-docker", {"DOCKER_HOST": f"unix://{socket}"}
        )
    assert engines == ["noop", "wasm"], log
    assert "docker engine not usable here: the docker daemon did not answer within 3s" in log, log
    assert "no-docker: engine docker is not usable here; not advertising it" in log, log
    assert not [line for line in log.splitlines() if line.rstrip().endswith(":")], log


# ---- the pull options ------------------------------------------------------------------------


async def shoal(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        str(SHOAL), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def test_bad_pull_options_stop_the_command(tmp_path: Path) -> None:
    bad = tmp_path / "auth.json"
    bad.write_text('{"auths": {"reg.test": {"auth": "bm9jb2xvbg=="}}}')  # "nocolon"
    base = ["--nats", "nats://127.0.0.1:1", "compute", "--name", "n"]
    code, out = await shoal(*base, "--registry-auth", str(bad))
    assert code == 2, out  # before any connection is tried
    assert f'registry credentials {bad}: the entry for reg.test has no valid "auth"' in out, out
    code, out = await shoal(*base, "--registry-auth", str(tmp_path / "absent.json"))
    assert code == 2 and "does not exist" in out, out
    code, out = await shoal(*base, "--image-pull-timeout", "soon")
    assert code == 2 and "--image-pull-timeout" in out, out
    code, out = await shoal(*base, "--image-pull", "sometimes")
    assert code == 2 and "'sometimes' is not one of 'always', 'missing', 'never'" in out, out


@contextlib.asynccontextmanager
async def cluster(url: str, tmp: Path, *args: str) -> AsyncIterator[ShoalClient]:
    """An orchestrator here and `shoal compute --name node ARGS` as a process."""
    bus = await Bus.connect(url, name="orchestrator")
    try:
        async with (
            Orchestrator(bus, FAST),
            compute_process(url, tmp, "node", {}, *args),
            await ShoalClient.connect(url) as client,
        ):

            async def has_docker() -> bool:
                return any("docker" in n.engines for n in await client.nodes())

            await eventually(has_docker, timeout=30, what="the node with docker")
            yield client
    finally:
        await bus.close()


def docker_job(image: str) -> dict[str, object]:
    return {
        "Name": "pull-options",
        "Type": "batch",
        "Tasks": [
            {
                "Name": "main",
                "Engine": {
                    "Type": "docker",
                    "Params": {"Image": image, "Entrypoint": ["echo"], "Parameters": ["ran"]},
                },
            }
        ],
    }


@pytest.mark.docker
async def test_registry_auth_and_timeout_reach_the_node(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    await need_docker()
    async with registry(tmp_path / "registry", users={"bo": "pw"}) as reg:
        auth = await login(tmp_path / "bo", reg.address, "bo", "pw")
        image = reg.image("shoal/cli:1")
        await push(image, config=auth.parent)
        try:
            args = ("--registry-auth", str(auth), "--image-pull-timeout", "45s")
            async with cluster(nats_server.url, tmp_path, *args) as client:
                view = await client.wait(await client.submit(docker_job(image)), timeout=60)
                assert view.state == "Completed", view
        finally:
            await untag(image)


@pytest.mark.docker
async def test_image_pull_never_reaches_the_node(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    await need_docker()
    absent = f"127.0.0.1:1/shoal/absent:{uuid.uuid4().hex[:8]}"
    async with cluster(nats_server.url, tmp_path, "--image-pull", "never") as client:
        view = await client.wait(await client.submit(docker_job(absent)), timeout=30)
        assert view.state == "Failed", view
        assert "this node does not pull images (--image-pull never)" in view.state_message, view


async def need_docker() -> None:
    probe = DockerEngine()
    try:
        require(await probe.probe(), "needs a reachable docker daemon (.ci/docker-setup.sh)")
    finally:
        await probe.close()
