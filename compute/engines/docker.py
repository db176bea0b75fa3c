"""The docker engine: runs a task in a container on the local dockerd through aiodocker."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiodocker
from aiodocker.containers import DockerContainer
from aiodocker.exceptions import DockerError
from aiodocker.stream import Stream

from compute.engines.base import Engine, RunRequest, RunResult
from compute.engines.docker_config import (
    LABEL_EXECUTION,
    LABEL_NODE,
    NETWORK_MODES,
    container_config,
    container_name,
    proxy_env,
    task_env,
)
from compute.engines.docker_errors import map_docker_errors, words
from compute.engines.docker_pull import ImagePuller
from compute.engines.docker_registry import (
    DEFAULT_PULL_POLICY,
    DEFAULT_PULL_TIMEOUT,
    PullPolicy,
    RegistryCredentials,
)
from compute.engines.hostfence import HostFence
from compute.netproxy import DomainProxy
from shared.errors import ExecutionFailed, ShoalError, Unavailable
from shared.spec.params import DockerParams

log = logging.getLogger(__name__)

HTTP_NETWORK = "shoal-http"

_PROBE_TIMEOUT = 3.0
_KILL_TIMEOUT = 10.0
_DRAIN_TIMEOUT = 10.0


class DockerEngine(Engine):
    """Runs each execution in its own container, removed when the run ends however it ends.

    Output is streamed from an attach made before the container starts (so nothing printed
    early is lost) into the request's stdout/stderr files, kept apart. Network `HTTP` puts the
    container on an internal docker network (no route out) with a per-run `DomainProxy` on
    that network's gateway as its only way out (and a `HostFence` keeps it off this host's
    other services); `proxy_resolve` pins names for the proxy.

    Images are pulled when a run needs them, as `image_pull` says (`missing`: only absent
    ones, `always`: every run, `never`: none), within `pull_timeout` seconds each, with the
    credentials of `registry_auth` (a docker config.json; default: docker's own).
    """

    name = "docker"
    runs_images = True

    def __init__(
        self,
        node_id: str = "",
        *,
        url: str | None = None,
        image_pull: PullPolicy = DEFAULT_PULL_POLICY,
        pull_timeout: float = DEFAULT_PULL_TIMEOUT,
        registry_auth: Path | None = None,
        proxy_resolve: Mapping[str, str] | None = None,
        http_network: str = HTTP_NETWORK,
        fence_host: bool | None = None,
    ) -> None:
        self.node_id = node_id
        self._url = url
        self.image_pull = image_pull
        self._puller = ImagePuller(pull_timeout, RegistryCredentials(registry_auth))
        self._proxy_resolve = dict(proxy_resolve or {})
        self._http_network = http_network
        self._docker: aiodocker.Docker | None = None
        self._network_lock = asyncio.Lock()
        # SHOAL_HTTP_FENCE=off where nothing on this host listens beyond loopback and the
        # agent may not change the firewall (a docker-in-docker pod, see deploy/k8s).
        if fence_host is None:
            fence_host = os.environ.get("SHOAL_HTTP_FENCE", "on").lower() not in ("off", "0")
        self._fence = HostFence() if fence_host else None
        self._background: set[asyncio.Task[None]] = set()

    # ---- client lifecycle ----------------------------------------------------------------------

    def _client(self) -> aiodocker.Docker:
        if self._docker is None:
            try:
                self._docker = aiodocker.Docker(url=self._url)
            # No DOCKER_HOST, context or socket here: aiodocker 0.27 says so with a bare assert.
            except AssertionError:
                raise Unavailable(
                    "no docker daemon found: DOCKER_HOST is not set, no docker context names "
                    "one, and there is no docker socket (/var/run/docker.sock)"
                ) from None
            except (ValueError, DockerError) as exc:  # a bad DOCKER_HOST or docker context
                raise Unavailable(f"no docker daemon found: {words(exc)}") from None
        return self._docker

    async def close(self) -> None:
        await self._puller.close()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._docker is not None:
            await self._docker.close()
            self._docker = None

    async def probe(self) -> bool:
        try:
            async with asyncio.timeout(_PROBE_TIMEOUT):
                with map_docker_errors("probe"):
                    await self._client().version()
        except ShoalError as exc:
            why = str(exc)
        except TimeoutError:
            why = f"the docker daemon did not answer within {_PROBE_TIMEOUT:g}s"
        else:
            return True
        log.warning("docker engine not usable here: %s", why)
        await self.close()  # an engine that is not advertised is never closed by anyone
        return False

    # ---- images --------------------------------------------------------------------------------

    async def has_image(self, image: str) -> bool:
        """Whether `image` is already on this machine (no pull: bids must answer quickly)."""
        try:
            with map_docker_errors(f"inspect image {image}"):
                await self._client().images.inspect(image)
        except ExecutionFailed as exc:
            if not exc.retryable:  # 404
                return False
            raise
        return True

    async def _ensure_image(self, image: str) -> None:
        """The image is here once this returns, pulled as the node's policy says."""
        if self.image_pull != "always" and await self.has_image(image):
            return
        if self.image_pull == "never":  # bids check, but it may have been removed since
            raise ExecutionFailed(
                f"image {image} is not on this node, and this node does not pull images "
                "(--image-pull never)",
                retryable=True,  # another node may have it
            )
        await self._puller.pull(self._client(), image)

    # ---- running -------------------------------------------------------------------------------

    async def run(self, request: RunRequest) -> RunResult:
        params = request.params
        if not isinstance(params, DockerParams):
            raise ExecutionFailed(
                f"docker engine given {type(params).__name__}, not DockerParams", retryable=False
            )
        await self._ensure_image(params.image)
        env = {**task_env(request.env), **params.env()}
        async with contextlib.AsyncExitStack() as stack:
            proxy: DomainProxy | None = None
            network = request.network.strip().lower()
            if network == "http":
                proxy, network_mode = await self._start_proxy(request, stack)
                env.update(proxy_env(proxy.url))
            elif network in NETWORK_MODES:
                network_mode = NETWORK_MODES[network]
            else:
                raise ExecutionFailed(f"unknown network type {request.network!r}", retryable=False)
            config = container_config(request, params, env, network_mode, self.node_id)
            container = await self._create(config, container_name(request.execution_id))
            stack.push_async_callback(self._remove, container)
            result = await self._supervise(container, request, proxy, network_mode)
        return result

    async def _create(self, config: dict[str, Any], name: str) -> DockerContainer:
        containers = self._client().containers
        try:
            with map_docker_errors("create container"):
                return await containers.create(config, name=name)
        except ExecutionFailed as exc:
            if "is already in use" not in exc.message:
                raise
        # A container left by an earlier attempt of this execution (an agent crash): replace it.
        with map_docker_errors("remove stale container"):
            await containers.container(name).delete(force=True)
        with map_docker_errors("create container"):
            return await containers.create(config, name=name)

    async def _supervise(
        self,
        container: DockerContainer,
        request: RunRequest,
        proxy: DomainProxy | None,
        network_mode: str,
    ) -> RunResult:
        timed_out = False
        async with contextlib.AsyncExitStack() as stack:
            out = stack.enter_context(request.stdout_path.open("ab", buffering=0))
            err = stack.enter_context(request.stderr_path.open("ab", buffering=0))
            # Attached before start (as `docker run` does), so no early output is missed; no
            # log replay: the daemon may send lines both replayed and live, duplicating them.
            # (Entered by hand: Stream's __aexit__ signature does not fit enter_async_context.)
            stream = container.attach(stdout=True, stderr=True, logs=False)
            stack.push_async_callback(stream.close)
            with map_docker_errors("attach to container"):
                await stream.__aenter__()
            pump = asyncio.create_task(_pump(stream, out, err))
            try:
                with map_docker_errors("start container"):
                    await container.start()
                if proxy is not None:
                    proxy.allow_clients(await _addresses_on(container, network_mode))
                status: dict[str, Any] = {}
                try:
                    async with asyncio.timeout(request.timeout):
                        with map_docker_errors("wait for container"):
                            status = await container.wait()
                except TimeoutError:
                    timed_out = True
                    await self._kill(container)
                await _drain(pump, request.execution_id)
            finally:
                if not pump.done():
                    pump.cancel()
                    with contextlib.suppress(asyncio.CancelledError, ShoalError):
                        await pump
        if timed_out:
            return RunResult(
                exit_code=-1,
                error=f"execution timed out after {request.timeout:g}s",
                timed_out=True,
            )
        exit_code = int(status.get("StatusCode", -1))
        with map_docker_errors("inspect container"):
            state = (await container.show()).get("State", {})
        if state.get("OOMKilled") and exit_code != 0:
            limit = f"{request.memory_bytes} bytes" if request.memory_bytes else "none set"
            return RunResult(exit_code=exit_code, error=f"out of memory (limit {limit})", oom=True)
        wait_error = (status.get("Error") or {}).get("Message", "")
        return RunResult(exit_code=exit_code, error=wait_error)

    async def _kill(self, container: DockerContainer) -> None:
        """SIGKILL and wait for the end, best effort: the final force-remove kills it anyway."""
        with contextlib.suppress(ShoalError), map_docker_errors("kill container"):
            await container.kill()  # 409 when it exited meanwhile: fine either way
        with contextlib.suppress(ShoalError, TimeoutError):
            async with asyncio.timeout(_KILL_TIMEOUT):
                with map_docker_errors("wait for killed container"):
                    await container.wait()

    async def _remove(self, container: DockerContainer) -> None:
        """Force-remove (kills too); shielded so a second cancellation cannot leak it."""
        task = asyncio.create_task(self._delete(container))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        await asyncio.shield(task)

    async def _delete(self, container: DockerContainer) -> None:
        try:
            with map_docker_errors("remove container"):
                await container.delete(force=True, v=True)
        except ShoalError as exc:
            if "No such container" not in exc.message:
                log.warning("container %s not removed: %s", container.id[:12], exc)

    # ---- HTTP networking -----------------------------------------------------------------------

    async def _start_proxy(
        self, request: RunRequest, stack: contextlib.AsyncExitStack
    ) -> tuple[DomainProxy, str]:
        """The run's proxy on the HTTP network's gateway, fenced: closed with `stack`."""
        if not request.domains:
            raise ExecutionFailed("network type HTTP needs at least one domain", retryable=False)
        gateway, bridge = await self._ensure_http_network()
        proxy = DomainProxy(request.domains, host=gateway, resolve=self._proxy_resolve)
        try:
            await proxy.start()
        except OSError as exc:  # the bridge is not on this host (rootless or remote dockerd)
            raise ExecutionFailed(
                f"cannot serve the HTTP proxy on the docker gateway {gateway}: {exc}",
                retryable=True,
            ) from None
        stack.push_async_callback(proxy.close)
        if self._fence is not None:
            await self._fence.open(bridge, proxy.port)
            stack.push_async_callback(self._fence.close, bridge, proxy.port)
        return proxy, self._http_network

    async def _ensure_http_network(self) -> tuple[str, str]:
        """The internal (no route out) network HTTP tasks join: its gateway (an address of
        this host) and the name of its bridge interface here."""
        networks = self._client().networks
        async with self._network_lock:
            try:
                with map_docker_errors(f"inspect network {self._http_network}"):
                    info = await (await networks.get(self._http_network)).show()
            except ExecutionFailed as exc:
                if exc.retryable:
                    raise
                try:
                    with map_docker_errors(f"create network {self._http_network}"):
                        created = await networks.create(
                            {
                                "Name": self._http_network,
                                "Driver": "bridge",
                                "Internal": True,
                                "CheckDuplicate": True,
                                "Labels": {"shoal.managed": "true"},
                            }
                        )
                except ExecutionFailed as exc2:  # another agent on this dockerd won the race
                    if exc2.retryable:
                        raise
                    created = await networks.get(self._http_network)
                with map_docker_errors(f"inspect network {self._http_network}"):
                    info = await created.show()
        if not info.get("Internal"):
            raise ExecutionFailed(
                f"docker network {self._http_network} exists but is not internal; "
                "remove it so Shoal can create it with no route out",
                retryable=False,
            )
        options = info.get("Options") or {}
        bridge = options.get("com.docker.network.bridge.name") or f"br-{info['Id'][:12]}"
        for entry in (info.get("IPAM") or {}).get("Config") or []:
            if entry.get("Gateway") and ":" not in entry["Gateway"]:
                return str(entry["Gateway"]), str(bridge)
        raise ExecutionFailed(
            f"docker network {self._http_network} has no IPv4 gateway", retryable=False
        )

    # ---- crash recovery ------------------------------------------------------------------------

    async def containers(self) -> list[dict[str, Any]]:
        """This node's containers, running or not: `id`, `name`, `state`, `labels`."""
        if not self.node_id:
            return []
        with map_docker_errors("list containers"):
            found = await self._client().containers.list(
                all=True, filters={"label": [f"{LABEL_NODE}={self.node_id}"]}
            )
        return [
            {
                "id": c.id,
                "name": ((c["Names"] or ["?"])[0]).lstrip("/"),
                "state": c["State"],
                "labels": dict(c["Labels"] or {}),
            }
            for c in found
        ]

    async def cleanup(self, keep: set[str]) -> int:
        """Remove this node's containers whose execution is not in `keep`; how many went.

        For an agent starting after a crash: containers of executions it no longer tracks would
        otherwise run on unseen, holding resources and possibly writing into stale work dirs.
        """
        if not self.node_id:
            log.warning("docker cleanup skipped: this engine has no node id to match labels")
            return 0
        removed = 0
        for found in await self.containers():
            if found["labels"].get(LABEL_EXECUTION) in keep:
                continue
            await self._delete(self._client().containers.container(found["id"]))
            removed += 1
        return removed


async def _addresses_on(container: DockerContainer, network: str) -> list[str]:
    """The container's address on `network`; none once it has exited (then nobody is served)."""
    with map_docker_errors("inspect container"):
        info = await container.show()
    networks = (info.get("NetworkSettings") or {}).get("Networks") or {}
    address = (networks.get(network) or {}).get("IPAddress", "")
    return [str(address)] if address else []


async def _pump(stream: Stream, out: io.RawIOBase, err: io.RawIOBase) -> None:
    """Copy the multiplexed attach stream into the two files until the container's stdio ends."""
    while True:
        with map_docker_errors("read container output"):
            message = await stream.read_out()
        if message is None:
            return
        # Unbuffered files: every chunk is visible to the executor's tail at once.
        (err if message.stream == 2 else out).write(message.data)


async def _drain(pump: asyncio.Task[None], execution_id: str) -> None:
    """Let the pump finish: the attach stream ends just after the container exits."""
    try:
        async with asyncio.timeout(_DRAIN_TIMEOUT):
            await asyncio.shield(pump)
    except TimeoutError:
        log.warning("%s: container output did not end %gs after exit", execution_id, _DRAIN_TIMEOUT)
