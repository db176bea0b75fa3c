"""Which engines a node has: builds the configured ones, keeps those that work on this machine."""

from __future__ import annotations

import logging
from pathlib import Path

from compute.engines.base import Engine
from compute.engines.docker_registry import DEFAULT_PULL_POLICY, DEFAULT_PULL_TIMEOUT, PullPolicy
from compute.engines.noop import NoopEngine
from compute.engines.wasm import WasmEngine

log = logging.getLogger(__name__)

# Every engine Shoal has: what `shoal compute` tries unless told otherwise, advertising those
# whose probe succeeds (docker when a daemon answers; wasm and noop anywhere).
ALL_ENGINES = ("docker", "wasm", "noop")


def make_engines(
    names: tuple[str, ...],
    node_id: str,
    *,
    image_pull: PullPolicy = DEFAULT_PULL_POLICY,
    pull_timeout: float = DEFAULT_PULL_TIMEOUT,
    registry_auth: Path | None = None,
) -> dict[str, Engine]:
    """The engines named in `names`, built but not probed yet; the pull settings are docker's."""
    engines: dict[str, Engine] = {}
    for name in names:
        if name == "wasm":
            engines[name] = WasmEngine()
        elif name == "noop":
            engines[name] = NoopEngine()
        elif name == "docker":
            from compute.engines.docker import DockerEngine  # aiodocker only when asked for

            engines[name] = DockerEngine(
                node_id=node_id,
                image_pull=image_pull,
                pull_timeout=pull_timeout,
                registry_auth=registry_auth,
            )
        else:
            log.warning("unknown engine %r: not advertising it", name)
    return engines


async def usable_engines(
    candidates: dict[str, Engine], wanted: tuple[str, ...], node_id: str, *, keep: set[str]
) -> dict[str, Engine]:
    """The candidates whose probe succeeds, each cleared of what a crashed run of this node
    left behind (except the executions in `keep`); the others in `wanted` are logged (an
    engine's probe logs why it failed)."""
    engines = {n: e for n, e in candidates.items() if await e.probe()}
    for name, engine in engines.items():
        removed = await engine.cleanup(keep)
        if removed:
            log.warning("%s: %s engine removed %d leftovers of a crash", node_id, name, removed)
    for name in wanted:
        if name not in engines:
            log.warning("%s: engine %s is not usable here; not advertising it", node_id, name)
    return engines
