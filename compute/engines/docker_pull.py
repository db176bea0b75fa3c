"""Image pulls for the docker engine: one pull per image at a time, bounded by the node's pull
timeout, with the registry's credentials, its failure said with whether a retry can help."""

from __future__ import annotations

import asyncio
import logging
import time

import aiodocker

from compute.engines.docker_errors import AUTH_REFUSALS, map_docker_errors
from compute.engines.docker_registry import RegistryCredentials, qualified, registry_of
from shared.errors import ExecutionFailed

log = logging.getLogger(__name__)


class ImagePuller:
    """Pulls images into the local dockerd for the executions that need them.

    Executions of one image share a single pull in flight (and its outcome). The pull runs in
    its own task: an execution cancelled while waiting leaves it to those still waiting, and
    `close()` ends it."""

    def __init__(self, timeout: float, credentials: RegistryCredentials) -> None:
        self.timeout = timeout
        self.credentials = credentials
        self._pulls: dict[str, asyncio.Task[None]] = {}

    async def pull(self, docker: aiodocker.Docker, image: str) -> None:
        """Pull `image`, or join the pull of it already in flight; raises ShoalError."""
        task = self._pulls.get(image)
        if task is None:
            task = asyncio.create_task(self._pull(docker, image), name=f"pull {image}")
            self._pulls[image] = task
            task.add_done_callback(self._forget)
        await asyncio.shield(task)

    async def close(self) -> None:
        pulls = list(self._pulls.values())
        for task in pulls:
            task.cancel()
        await asyncio.gather(*pulls, return_exceptions=True)

    def _forget(self, task: asyncio.Task[None]) -> None:
        for image, running in list(self._pulls.items()):
            if running is task:
                del self._pulls[image]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have been cancelled meanwhile

    async def _pull(self, docker: aiodocker.Docker, image: str) -> None:
        auth = self.credentials.for_image(image)
        started = time.monotonic()
        log.info("pulling image %s%s", image, " (with credentials)" if auth else "")
        try:
            async with asyncio.timeout(self.timeout):
                with map_docker_errors(f"pulling image {image}", pull=True):
                    # aiodocker sends credentials only with the registry spelt out in the name.
                    await docker.images.pull(qualified(image) if auth else image, auth=auth)
        except TimeoutError:
            raise ExecutionFailed(
                f"pulling image {image}: {registry_of(image)} did not deliver it within "
                f"{self.timeout:g}s (the node's --image-pull-timeout)",
                retryable=True,
            ) from None
        except ExecutionFailed as exc:
            refused = any(hint in exc.message.lower() for hint in AUTH_REFUSALS)
            if auth is None and refused:  # say where credentials would have come from
                raise ExecutionFailed(
                    f"{exc.message} ({self.credentials.describe(image)})", retryable=False
                ) from None
            raise
        log.info("pulled image %s in %.1fs", image, time.monotonic() - started)
