"""A stack whose agents run docker tasks: skips without dockerd or the local busybox image,
fails instead under CI=true, and closes the agents' docker engines afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from compute.engines.docker import DockerEngine
from tests.conftest import require
from tests.integration.stack import Stack, stack

IMAGE = "busybox:1.37.0"
SETUP = "run .ci/docker-setup.sh to start dockerd and build the local busybox image"


@asynccontextmanager
async def docker_stack(
    url: str,
    tmp: Path,
    agents: int = 1,
    engines: tuple[str, ...] = ("docker", "noop"),
    **agent_kwargs: object,
) -> AsyncIterator[Stack]:
    probe = DockerEngine()
    try:
        require(await probe.probe(), f"needs a reachable docker daemon ({SETUP})")
        require(await probe.has_image(IMAGE), f"needs the image {IMAGE} ({SETUP})")
    finally:
        await probe.close()
    async with stack(url, tmp, agents=agents, engines=engines, **agent_kwargs) as s:
        try:
            assert all("docker" in agent.engines for agent in s.agents.values())
            yield s
        finally:
            for agent in s.agents.values():  # the agent does not close its engines itself
                engine = agent.engines.get("docker")
                if isinstance(engine, DockerEngine):
                    await engine.close()
