"""Image pulls against a real registry on loopback: a node pulls what it lacks (`--image-pull
missing`), every run (`always`) or never (then it declines at bid time); a failed pull fails
the execution with the registry's reason, retryable only when a retry can help; credentials
come from a docker config.json."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from compute.engines.base import RunRequest
from compute.engines.docker import DockerEngine
from shared import wire
from shared.errors import ExecutionFailed
from shared.natsserver import EmbeddedNats
from shared.spec.params import DockerParams
from tests.conftest import require
from tests.e2e.registry import Registry, free_port, login, push, registry, run, untag
from tests.integration.stack import stack

pytestmark = pytest.mark.docker

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "docker-pull.yaml"

SOURCE = "busybox:latest"
SETUP = "run .ci/docker-setup.sh to start dockerd and build the local busybox image"

MakeEngine = Callable[..., Awaitable[DockerEngine]]


@pytest.fixture
async def make_engine() -> AsyncIterator[MakeEngine]:
    """DockerEngines with the given pull settings, checked usable, closed at the end."""
    require(shutil.which("docker") is not None, f"needs the docker CLI ({SETUP})")
    made: list[DockerEngine] = []

    async def make(**kwargs: Any) -> DockerEngine:
        engine = DockerEngine(node_id=f"test-{uuid.uuid4().hex[:8]}", **kwargs)
        made.append(engine)
        require(await engine.probe(), f"needs a reachable docker daemon ({SETUP})")
        require(await engine.has_image(SOURCE), f"needs the image {SOURCE} ({SETUP})")
        return engine

    try:
        yield make
    finally:
        for engine in made:
            await engine.close()


@pytest.fixture
async def reg(tmp_path: Path) -> AsyncIterator[Registry]:
    async with registry(tmp_path / "registry") as r:
        yield r


@pytest.fixture
async def image(reg: Registry) -> AsyncIterator[str]:
    """busybox, pushed to the registry under a unique tag and absent from dockerd."""
    name = reg.image(f"shoal/test:{uuid.uuid4().hex[:8]}")
    await push(name, source=SOURCE)
    try:
        yield name
    finally:
        await untag(name)  # what the test pulled


def request(tmp: Path, image: str, script: str = "echo pulled and ran") -> RunRequest:
    tmp.mkdir(parents=True, exist_ok=True)
    for stream in ("stdout", "stderr"):
        (tmp / stream).touch()
    return RunRequest(
        execution_id=f"e-{uuid.uuid4()}",
        job_id="j-pull",
        params=DockerParams.model_validate(
            {"Image": image, "Entrypoint": ["/bin/sh", "-c"], "Parameters": [script]}
        ),
        workdir=tmp,
        stdout_path=tmp / "stdout",
        stderr_path=tmp / "stderr",
    )


# ---- the engine ------------------------------------------------------------------------------


async def test_missing_image_is_pulled_then_run(
    make_engine: MakeEngine, image: str, tmp_path: Path
) -> None:
    engine = await make_engine()  # the default policy: missing
    assert not await engine.has_image(image)
    req = request(tmp_path, image)
    result = await engine.run(req)
    assert (result.exit_code, result.error) == (0, ""), req.stderr_path.read_text()
    assert req.stdout_path.read_text() == "pulled and ran\n"
    assert await engine.has_image(image)


async def test_concurrent_runs_share_one_pull(
    make_engine: MakeEngine, image: str, tmp_path: Path, reg: Registry
) -> None:
    engine = await make_engine()
    results = await asyncio.gather(
        *(engine.run(request(tmp_path / str(i), image)) for i in range(3))
    )
    assert [r.exit_code for r in results] == [0, 0, 0]
    tag = image.rsplit(":", 1)[1]
    # Each pull asks for the manifest (HEAD or GET) by tag; the push only PUT it.
    asked = [f"{verb} /v2/shoal/test/manifests/{tag} " for verb in ("HEAD", "GET")]
    assert sum(reg.log.read_text().count(a) for a in asked) == 1


async def test_unknown_tag_fails_with_the_registrys_reason(
    make_engine: MakeEngine, reg: Registry, tmp_path: Path
) -> None:
    engine = await make_engine()
    missing = reg.image("shoal/test:no-such-tag")
    with pytest.raises(ExecutionFailed) as caught:
        await engine.run(request(tmp_path, missing))
    assert caught.value.message.startswith(f"pulling image {missing} failed: ")
    assert "manifest unknown" in caught.value.message
    assert not caught.value.retryable  # the same on every node and every attempt


async def test_unreachable_registry_is_retryable(make_engine: MakeEngine, tmp_path: Path) -> None:
    engine = await make_engine()
    nowhere = f"127.0.0.1:{free_port()}/shoal/test:1"  # nothing listens there
    with pytest.raises(ExecutionFailed) as caught:
        await engine.run(request(tmp_path, nowhere))
    assert "connection refused" in caught.value.message
    assert caught.value.retryable


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """A TCP port that accepts and never answers: a registry hanging mid-pull."""
    writers: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await server.wait_closed()


async def test_pull_timeout_fails_retryably(make_engine: MakeEngine, tmp_path: Path) -> None:
    engine = await make_engine(pull_timeout=1.5)
    async with silent_server() as port:
        hanging = f"127.0.0.1:{port}/shoal/test:1"
        with pytest.raises(ExecutionFailed) as caught:
            await engine.run(request(tmp_path, hanging))
    assert caught.value.message == (
        f"pulling image {hanging}: 127.0.0.1:{port} did not deliver it within 1.5s "
        "(the node's --image-pull-timeout)"
    )
    assert caught.value.retryable


async def test_never_does_not_pull(make_engine: MakeEngine, image: str, tmp_path: Path) -> None:
    engine = await make_engine(image_pull="never")
    with pytest.raises(ExecutionFailed, match="this node does not pull images") as caught:
        await engine.run(request(tmp_path, image))
    assert caught.value.retryable  # another node may have the image
    assert not await engine.has_image(image)


async def test_always_pulls_over_the_local_image(
    make_engine: MakeEngine, reg: Registry, tmp_path: Path
) -> None:
    """The registry's and the local image differ under one name: `missing` runs the local
    one, `always` fetches the registry's first."""
    name = reg.image(f"shoal/test:{uuid.uuid4().hex[:8]}")
    container = await run("docker", "create", SOURCE)
    made: list[str] = []
    try:
        made.append(await run("docker", "commit", "--change", "ENV MARK=registry", container, name))
        await run("docker", "push", name)
        made.append(await run("docker", "commit", "--change", "ENV MARK=local", container, name))
    finally:
        await run("docker", "rm", container)
    try:
        missing, always = await make_engine(), await make_engine(image_pull="always")
        req = request(tmp_path / "missing", name, 'echo "$MARK"')
        assert (await missing.run(req)).exit_code == 0
        assert req.stdout_path.read_text() == "local\n"
        req = request(tmp_path / "always", name, 'echo "$MARK"')
        assert (await always.run(req)).exit_code == 0
        assert req.stdout_path.read_text() == "registry\n"
    finally:
        await untag(name, *made)  # the two images this test made, and no other


# ---- credentials -----------------------------------------------------------------------------


async def test_registry_credentials_from_a_docker_config(
    make_engine: MakeEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with registry(tmp_path / "registry", users={"alice": "s3cret"}) as reg:
        logged_in = await login(tmp_path / "alice", reg.address, "alice", "s3cret")
        name = reg.image(f"shoal/private:{uuid.uuid4().hex[:8]}")
        await push(name, config=logged_in.parent)
        empty = tmp_path / "nobody"
        empty.mkdir()
        monkeypatch.setenv("DOCKER_CONFIG", str(empty))  # docker's own config: no credentials
        try:
            engine = await make_engine()
            with pytest.raises(ExecutionFailed) as caught:
                await engine.run(request(tmp_path / "anonymous", name))
            assert "no basic auth credentials" in caught.value.message
            assert caught.value.message.endswith(
                f"(no credentials for {reg.address} in {empty / 'config.json'}; "
                "give them with --registry-auth FILE)"
            )
            assert not caught.value.retryable

            wrong = tmp_path / "wrong.json"
            auths = {reg.address: {"username": "alice", "password": "nope"}}
            wrong.write_text(json.dumps({"auths": auths}))
            engine = await make_engine(registry_auth=wrong)
            with pytest.raises(ExecutionFailed, match="unauthorized") as caught:
                await engine.run(request(tmp_path / "wrong", name))
            assert not caught.value.retryable

            engine = await make_engine(registry_auth=logged_in)  # --registry-auth FILE
            req = request(tmp_path / "file", name)
            assert (await engine.run(req)).exit_code == 0, req.stderr_path.read_text()
            await untag(name)

            monkeypatch.setenv("DOCKER_CONFIG", str(logged_in.parent))  # docker's own config
            engine = await make_engine()
            req = request(tmp_path / "own", name)
            assert (await engine.run(req)).exit_code == 0, req.stderr_path.read_text()
        finally:
            await untag(name)


# ---- through the orchestrator and an agent ---------------------------------------------------


def job(image: str, name: str) -> dict[str, Any]:
    return {
        "Name": name,
        "Type": "batch",
        "Tasks": [
            {
                "Name": "main",
                "Engine": {
                    "Type": "docker",
                    "Params": {
                        "Image": image,
                        "Entrypoint": ["echo"],
                        "Parameters": ["from " + name],
                    },
                },
            }
        ],
    }


@contextlib.asynccontextmanager
async def docker_node(url: str, tmp: Path, **config: Any) -> AsyncIterator[Any]:
    """An orchestrator and one agent offering docker, with the given AgentConfig settings."""
    async with stack(url, tmp, agents=1, engines=("docker",), **config) as s:
        require("docker" in s.agents["node-0"].engines, f"needs a docker daemon ({SETUP})")
        yield s


async def test_a_node_pulls_and_runs_a_job(
    nats_server: EmbeddedNats, tmp_path: Path, image: str
) -> None:
    async with docker_node(nats_server.url, tmp_path) as s, await s.client() as client:
        job_id = await client.submit(job(image, "pulled"))
        view = await client.wait(job_id, timeout=60)
        assert view.state == "Completed", view
        out = b"".join([line.data async for line in client.logs(job_id)])
        assert out == b"from pulled\n"


async def test_a_missing_tag_fails_the_job_with_the_registrys_reason(
    nats_server: EmbeddedNats, tmp_path: Path, reg: Registry
) -> None:
    missing = reg.image("shoal/test:no-such-tag")
    async with docker_node(nats_server.url, tmp_path) as s, await s.client() as client:
        job_id = await client.submit(job(missing, "unpullable"))
        view = await client.wait(job_id, timeout=60)
        assert view.state == "Failed", view
        [execution] = view.executions  # not retried: no attempt could succeed
        assert execution.compute_state == "failed"
        assert execution.error.startswith(f"pulling image {missing} failed: "), execution
        assert "manifest unknown" in execution.error


async def test_never_declines_at_bid_time(
    nats_server: EmbeddedNats, tmp_path: Path, image: str
) -> None:
    async with (
        docker_node(nats_server.url, tmp_path, image_pull="never") as s,
        await s.client() as client,
    ):
        job_id = await client.submit(job(image, "not-here"))

        def declined(view: wire.JobView) -> bool:
            return view.terminal or "does not pull" in view.state_message

        view = await client.wait(job_id, timeout=30, until=declined)
        assert view.executions == [] or all(e.compute_state != "running" for e in view.executions)
        assert (
            f"image {image} is not on this node, and this node does not pull images "
            "(--image-pull never)" in view.state_message
        ), view
        assert not await s.agents["node-0"].engines["docker"].has_image(image)


async def test_the_example_pulls_and_runs(
    nats_server: EmbeddedNats, tmp_path: Path, reg: Registry
) -> None:
    """examples/docker-pull.yaml as its header sets it up, on this test's registry port."""
    text = EXAMPLE.read_text().replace("127.0.0.1:5000", reg.address)
    image = reg.image("shoal/hello:1")
    assert f"Image: {image}" in text
    await push(image, source=SOURCE)
    try:
        async with docker_node(nats_server.url, tmp_path) as s, await s.client() as client:
            job_id = await client.submit(text)
            view = await client.wait(job_id, timeout=60)
            assert view.state == "Completed", view
            out = b"".join([line.data async for line in client.logs(job_id)])
            assert out == b"pulled from the registry, then run\n"
    finally:
        await untag(image)
