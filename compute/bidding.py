"""Bid policy: why this node declines an offered task, or None when it takes it."""

from __future__ import annotations

from collections.abc import Container

from compute.engines.base import Engine
from compute.inputs import AllowedPath, check_local
from shared import wire
from shared.errors import ShoalError
from shared.spec import JobSpec
from shared.spec.params import DockerParams

# The refusals that pass once running work ends: the orchestrator waits and offers again.
BUSY_RESOURCES = "not enough free resources on this node right now"
BUSY_SLOTS = "all execution slots are busy"


def refusal(
    spec: JobSpec,
    *,
    approval: wire.Approval,
    engines: Container[str],
    publishers: Container[str],
    sources: Container[str],
    network: bool,
    allow_local_paths: tuple[AllowedPath, ...],
    free: wire.Capacity,
    running: int,
) -> str | None:
    """Local policy: why a node with this standing declines, or None."""
    task = spec.task
    if approval == "REJECTED":
        return "this node was rejected by an operator"
    if task.engine.type not in engines:
        return f"engine {task.engine.type} is not available on this node"
    if (task.publisher.type or "nats") not in publishers:
        return f"publisher {task.publisher.type} is not available on this node"
    if task.network.type != "None" and not network:
        return "networking is not allowed on this node"
    for src in task.input_sources:
        if src.source.type not in sources:
            return f"input source {src.source.type} is not supported on this node"
        why = check_local(src, allow_local_paths)
        if why:
            return why
    if not free.fits(wire.Capacity.of(task.resources)):
        return BUSY_RESOURCES
    if free.executions and running >= free.executions:
        return BUSY_SLOTS
    return None


async def image_refusal(spec: JobSpec, engine: Engine | None, *, pulls: bool) -> str | None:
    """A task whose engine runs images needs its image here when this node does not pull
    (`--image-pull never`). A node that pulls takes the task at once: the pull is part of
    running it, and a failed pull fails the execution with the registry's reason."""
    if engine is None or not engine.runs_images or pulls:
        return None
    image = DockerParams.model_validate(spec.task.engine.params).image
    try:
        if not await engine.has_image(image):
            return (
                f"image {image} is not on this node, and this node does not pull images "
                "(--image-pull never)"
            )
    except ShoalError as exc:
        return f"docker is not answering: {exc}"
    return None
