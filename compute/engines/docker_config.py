"""What container a task becomes: names, labels, environment and the docker create config,
built from a RunRequest (no daemon involved)."""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Mapping
from typing import Any

from compute.engines.base import RunRequest
from compute.task_env import RESERVED
from shared.errors import ExecutionFailed
from shared.spec.params import DockerParams

LABEL_JOB = "shoal.job"
LABEL_EXECUTION = "shoal.execution"
LABEL_NODE = "shoal.node"

_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_.-]")
NETWORK_MODES = {"none": "none", "": "none", "host": "host", "full": "bridge", "bridge": "bridge"}
# Docker's default set minus what a batch task has no business with (raw sockets, device
# nodes, audit log); shells, package managers and file ownership changes keep working.
CAP_DROP = ["NET_RAW", "MKNOD", "AUDIT_WRITE"]


def container_name(execution_id: str) -> str:
    """A docker-safe, per-execution name: a second run of the same execution finds the first."""
    return "shoal-" + _NAME_UNSAFE.sub("_", execution_id)


def guest_path(path: str) -> str:
    return posixpath.normpath("/" + path.lstrip("/"))


def container_config(
    request: RunRequest,
    params: DockerParams,
    env: dict[str, str],
    network_mode: str,
    node_id: str,
) -> dict[str, Any]:
    """The docker create config of a task: mounts, limits, labels, network."""
    host: dict[str, Any] = {
        "Mounts": [
            {
                "Type": "bind",
                "Source": str(m.host_path.resolve()),
                "Target": guest_path(m.target),
                "ReadOnly": m.read_only,
            }
            for m in request.mounts
        ],
        "NetworkMode": network_mode,
        "Privileged": False,
        "CapDrop": CAP_DROP,
        "SecurityOpt": ["no-new-privileges"],
        # No docker-init: we only ever SIGKILL, and without it a bad entrypoint fails the
        # start with a clear, non-retryable error instead of exiting 127 from inside.
    }
    if request.memory_bytes:
        host["Memory"] = request.memory_bytes
        host["MemorySwap"] = request.memory_bytes  # no swap beyond the limit
    if request.cpu_millis:
        host["NanoCpus"] = request.cpu_millis * 1_000_000
    if request.gpus > 0:
        host["DeviceRequests"] = [{"Driver": "", "Count": request.gpus, "Capabilities": [["gpu"]]}]
    config: dict[str, Any] = {
        "Image": params.image,
        "Cmd": list(params.parameters),
        "Env": [f"{k}={v}" for k, v in env.items()],
        "Labels": {
            LABEL_JOB: request.job_id,
            LABEL_EXECUTION: request.execution_id,
            LABEL_NODE: node_id,
        },
        "AttachStdout": True,
        "AttachStderr": True,
        "Tty": False,
        "HostConfig": host,
    }
    if params.entrypoint:
        config["Entrypoint"] = list(params.entrypoint)
    if params.working_directory:
        config["WorkingDir"] = params.working_directory
    if network_mode == "none":
        config["NetworkDisabled"] = True
    return config


def task_env(env: Mapping[str, str]) -> dict[str, str]:
    """Task Env with `env:VAR` values taken from this agent's environment (secrets stay here).
    Shoal's own variables are values, never references: a job named `env:HOME` is called that."""
    out: dict[str, str] = {}
    for key, value in env.items():
        if value.startswith("env:") and key not in RESERVED:
            source = value.removeprefix("env:")
            if source not in os.environ:
                raise ExecutionFailed(
                    f"task Env {key} wants ${source} from the compute node, which does not have it",
                    retryable=True,  # another node may have it
                )
            value = os.environ[source]
        out[key] = value
    return out


def proxy_env(url: str) -> dict[str, str]:
    # Both spellings: curl reads the lower-case ones, many other tools the upper-case ones.
    return {
        "HTTP_PROXY": url,
        "HTTPS_PROXY": url,
        "http_proxy": url,
        "https_proxy": url,
        "NO_PROXY": "",
        "no_proxy": "",
    }
