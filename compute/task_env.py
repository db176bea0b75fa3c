"""The environment every task gets: its job, execution, node and partition, over the task's Env.

Bacalhau (1.7 on) sets five variables in every task (`pkg/compute/envvars.go`); Shoal sets the
same five under its own prefix and under Bacalhau's, so a Bacalhau task runs unchanged, plus
four under its own prefix alone. These win over the task's `Env` and over the engine's
`EnvironmentVariables`, as in Bacalhau, where system variables take precedence over the
task's: a task cannot make itself another partition by accident.

An `Env` value `secret:<name>` is replaced by the secret's value, opened from the box the
orchestrator sealed for this node in the order (`open_secrets`); the value goes into the
task's environment and nowhere else (no log line, report or error carries it).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from shared import wire
from shared.errors import ExecutionFailed
from shared.sealing import SealingError, open_sealed, sealing_context, secret_refs, unb64
from shared.spec import JobSpec
from shared.spec.params import DockerParams, Params, WasmParams

log = logging.getLogger(__name__)

# What Bacalhau sets, with the same meaning and values.
SHARED_NAMES = ("EXECUTION_ID", "JOB_ID", "JOB_TYPE", "PARTITION_INDEX", "PARTITION_COUNT")
# What only Shoal sets (under SHOAL_ alone: Bacalhau has no such variables).
SHOAL_ONLY_NAMES = ("JOB_NAME", "JOB_NAMESPACE", "JOB_VERSION", "NODE_ID")
RESERVED = frozenset(
    [f"SHOAL_{n}" for n in (*SHARED_NAMES, *SHOAL_ONLY_NAMES)]
    + [f"BACALHAU_{n}" for n in SHARED_NAMES]
)


def system_env(order: wire.ExecutionOrder, spec: JobSpec, node_id: str) -> dict[str, str]:
    """Shoal's variables for this execution.

    The partition is the order's: 0..Count-1 for batch partitions and service replicas, kept
    by every retry or replacement of it. Ops and daemon jobs are not partitioned (each node
    runs the whole task): index 0 and count 0 on every node, as Bacalhau gives them.
    """
    shared = {
        "EXECUTION_ID": order.execution_id,
        "JOB_ID": order.job_id,
        "JOB_TYPE": order.job_type,
        "PARTITION_INDEX": str(order.partition),
        "PARTITION_COUNT": str(spec.count or 0),
    }
    own = {
        "JOB_NAME": spec.name,
        "JOB_NAMESPACE": order.namespace,
        "JOB_VERSION": str(order.job_version),
        "NODE_ID": node_id,
    }
    env = {f"SHOAL_{k}": v for k, v in (*shared.items(), *own.items())}
    env.update({f"BACALHAU_{k}": v for k, v in shared.items()})
    return env


def task_environment(
    order: wire.ExecutionOrder,
    spec: JobSpec,
    node_id: str,
    secrets: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The task's `Env`, its secret references replaced by `secrets` (from `open_secrets`;
    a reference without a value is left out, never passed on as its text), with Shoal's
    variables over it."""
    env = dict(spec.task.env)
    for name, _ in secret_refs(env):
        if secrets is not None and name in secrets:
            env[name] = secrets[name]
        else:
            del env[name]
    _note_ignored(order, "Env", [k for k in env if k in RESERVED])
    return {**env, **system_env(order, spec, node_id)}


def open_secrets(
    order: wire.ExecutionOrder, spec: JobSpec, key: X25519PrivateKey, node_id: str
) -> dict[str, str]:
    """The value of each secret the task's `Env` refers to, by variable, opened from the
    order's sealed boxes with this node's key. ExecutionFailed (not retryable here) when one
    is missing or does not open; its message names the variable and the secret, never a
    value."""
    wanted = secret_refs(spec.task.env)
    if not wanted:
        return {}
    boxes = {s.name: s for s in order.secrets}
    opened: dict[str, str] = {}
    for name, secret in wanted:
        box = boxes.get(name)
        if box is None or box.secret != secret:
            raise ExecutionFailed(
                f"Env {name} refers to secret {secret!r}, and the order carries no value "
                "for it (sent by an orchestrator without secrets support?)",
                retryable=False,
            )
        context = sealing_context(order.execution_id, node_id, name)
        try:
            opened[name] = open_sealed(unb64(box.sealed, "the box"), key, context).decode()
        except SealingError as exc:
            raise ExecutionFailed(
                f"Env {name}: secret {secret!r} does not open on {node_id}: {exc}",
                retryable=False,
            ) from None
        except UnicodeDecodeError:
            raise ExecutionFailed(
                f"Env {name}: secret {secret!r} is not UTF-8 text", retryable=False
            ) from None
    return opened


def without_reserved(params: Params, order: wire.ExecutionOrder) -> Params:
    """`params` with no `EnvironmentVariables` entry named like one of Shoal's variables.

    Engines put `EnvironmentVariables` over the task's environment (the docs promise it), so
    an entry left in would replace the value Shoal set."""
    if isinstance(params, DockerParams):
        kept = [i for i in params.environment_variables if _docker_key(i) not in RESERVED]
        if len(kept) == len(params.environment_variables):
            return params
        dropped = [_docker_key(i) for i in params.environment_variables if i not in kept]
        _note_ignored(order, "EnvironmentVariables", dropped)
        return params.model_copy(update={"environment_variables": kept})
    if isinstance(params, WasmParams):
        wasm_env = params.environment_variables
        dropped = [k for k in wasm_env if k in RESERVED]
        if not dropped:
            return params
        _note_ignored(order, "EnvironmentVariables", dropped)
        kept_env = {k: v for k, v in wasm_env.items() if k not in RESERVED}
        return params.model_copy(update={"environment_variables": kept_env})
    return params


def _docker_key(item: str) -> str:
    # The key as DockerParams.env() reads it: `K=V` and `K = V` alike.
    return item.partition("=")[0].strip()


def _note_ignored(order: wire.ExecutionOrder, where: str, names: list[str]) -> None:
    if names:
        log.warning(
            "execution %s of job %s: %s %s ignored: Shoal sets %s itself",
            order.execution_id,
            order.job_id,
            where,
            ", ".join(sorted(names)),
            "them" if len(names) > 1 else "it",
        )
