"""Long-running commands: `shoal orchestrator` and `shoal compute` (`devstack.py` runs both)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from cli.common import connection, run, tls_ca
from cli.health_writer import compute_health, health_file_option, keep_fresh, orchestrator_health
from cli.output import errors_to_exit, info
from cli.service_options import (
    Ready,
    metrics_options,
    orchestrator_settings,
    probes,
    serving,
    setup_logging,
    until_signalled,
    with_options,
)
from compute.agent import AgentConfig, ComputeAgent
from compute.engine_setup import ALL_ENGINES
from compute.engines.docker_registry import (
    DEFAULT_PULL_POLICY,
    PULL_POLICIES,
    PullPolicy,
    RegistryCredentials,
)
from compute.fleet import Fleet
from compute.inputs import AllowedPath
from orchestrator.service import Orchestrator, OrchestratorConfig
from shared import subjects
from shared.bus import Bus
from shared.units import parse_cpu, parse_duration, parse_size

F = TypeVar("F", bound=Callable[..., Any])

log = logging.getLogger(__name__)


def _labels(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r}: expected KEY=VALUE", param_hint="--label")
        out[key.strip()] = value.strip()
    return out


@click.command()
@orchestrator_settings
@click.option(
    "--replicas",
    type=click.IntRange(1, 5),
    default=1,
    show_default=True,
    envvar="SHOAL_REPLICAS",
    help="Replicas of every stream, bucket and object store (3 on a 3-member JetStream cluster).",
)
@click.option(
    "--name",
    "orchestrator_name",
    default="",
    envvar="SHOAL_ORCHESTRATOR_NAME",
    help="This orchestrator's name in the leader lease (default: a random one).",
)
@click.option(
    "--secrets-key",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    envvar="SHOAL_SECRETS_KEY",
    metavar="FILE",
    help="The master key secrets are encrypted under (32 random bytes, base64), made with "
    "mode 0600 if missing; the same file on every orchestrator. Without it, `shoal secret "
    "create` is refused.",
)
@health_file_option
@with_options(metrics_options)
@click.option("-v", "--verbose", is_flag=True)
@click.pass_context
def orchestrator(
    ctx: click.Context,
    settings: dict[str, Any],
    replicas: int,
    orchestrator_name: str,
    secrets_key: Path | None,
    health_file: Path | None,
    metrics_port: int,
    metrics_host: str,
    verbose: bool,
) -> None:
    """Run an orchestrator against a NATS server (--nats)."""
    setup_logging(verbose)
    url, creds = connection(ctx)
    ca = tls_ca(ctx)
    config = OrchestratorConfig(
        **settings,
        name=orchestrator_name,
        secrets_key=secrets_key,
    )

    async def main() -> None:
        bus = await Bus.connect(
            url, creds=creds, name="shoal-orchestrator", replicas=replicas, tls_ca=ca
        )
        ready = Ready()
        try:
            async with (
                probes(metrics_port, metrics_host, [bus], ready),
                Orchestrator(bus, config) as orch,
                serving(orch, ready),
                keep_fresh(health_file, lambda: orchestrator_health(orch, bus)),
            ):
                info(f"orchestrator running against {url}")
                await until_signalled()
        finally:
            await bus.close()

    with errors_to_exit():
        run(main())


@click.command()
@click.option(
    "--name",
    required=True,
    help="Node name, e.g. the host's. The node id replaces every character but letters, "
    "digits, '-' and '_' with '-'; the name itself is kept as the label hostname.",
)
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE")
@click.option("--cpu", default=None, help="CPU to offer (e.g. 2, 500m); default all cores.")
@click.option("--memory", default=None, help="Memory to offer (e.g. 4Gi); default all RAM.")
@click.option("--gpus", type=int, default=0)
@click.option(
    "--engines",
    default=",".join(ALL_ENGINES),
    show_default=True,
    help="Comma-separated; only those that work here are advertised (docker when a docker "
    "daemon answers; the log says why one is not).",
)
@click.option(
    "--image-pull",
    type=click.Choice(PULL_POLICIES),
    default=DEFAULT_PULL_POLICY,
    show_default=True,
    envvar="SHOAL_IMAGE_PULL",
    help="When the docker engine pulls a task's image: if missing here, always (every run), "
    "or never (a node then declines tasks whose image it lacks). A pull is part of running "
    "a task: a failed one fails its execution with the registry's reason.",
)
@click.option(
    "--image-pull-timeout",
    default="5m",
    show_default=True,
    envvar="SHOAL_IMAGE_PULL_TIMEOUT",
    metavar="DURATION",
    help="Longest one image pull may take (e.g. 90s, 10m); a pull that takes longer fails "
    "its execution, which may then be retried.",
)
@click.option(
    "--registry-auth",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    envvar="SHOAL_REGISTRY_AUTH",
    help="Registry credentials for image pulls, in docker's config.json format "
    '({"auths": {"<registry>": {"auth": "<base64 user:password>"}}}); read again at '
    "every pull. Default: docker's own config.json ($DOCKER_CONFIG or ~/.docker).",
)
@click.option(
    "--allow-local-path",
    "allow",
    multiple=True,
    metavar="DIR[:rw]",
    help="Host directory jobs may mount (read-only unless :rw).",
)
@click.option("--heartbeat-interval", type=float, default=1.0, show_default=True)
@click.option("--max-executions", type=int, default=0, help="0 = limited by resources only.")
@click.option("--no-network", is_flag=True, help="Refuse jobs that ask for networking.")
@click.option(
    "--virtual",
    type=int,
    default=0,
    metavar="K",
    help="Host K virtual noop nodes named NAME-0..NAME-K-1 (scale tests).",
)
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    default=Path(".shoal/compute"),
    show_default=True,
)
@click.option(
    "--replicas",
    type=click.IntRange(1, 5),
    default=1,
    show_default=True,
    envvar="SHOAL_REPLICAS",
    help="Replicas of the node's own result bucket (3 on a 3-member JetStream cluster, as the "
    "orchestrator's).",
)
@health_file_option
@with_options(metrics_options)
@click.option("-v", "--verbose", is_flag=True)
@click.pass_context
def compute(
    ctx: click.Context,
    name: str,
    labels: tuple[str, ...],
    cpu: str | None,
    memory: str | None,
    gpus: int,
    engines: str,
    image_pull: PullPolicy,
    image_pull_timeout: str,
    registry_auth: Path | None,
    allow: tuple[str, ...],
    heartbeat_interval: float,
    max_executions: int,
    no_network: bool,
    virtual: int,
    state_dir: Path,
    replicas: int,
    health_file: Path | None,
    metrics_port: int,
    metrics_host: str,
    verbose: bool,
) -> None:
    """Run a compute agent against a NATS server (--nats)."""
    setup_logging(verbose)
    url, creds = connection(ctx)
    ca = tls_ca(ctx)
    try:
        node_id = subjects.node_id_from(name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--name") from None
    if node_id != name:
        log.info("node name %r becomes node id %r (label hostname=%s)", name, node_id, name)
    try:
        pull_timeout = parse_duration(image_pull_timeout)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--image-pull-timeout") from None
    if pull_timeout <= 0:
        raise click.BadParameter("must be more than 0", param_hint="--image-pull-timeout")
    with errors_to_exit():
        if registry_auth is not None:
            RegistryCredentials(registry_auth).check()
        config = AgentConfig(
            name=node_id,
            labels={"hostname": name, **_labels(labels)},
            # Virtual nodes run noop only (compute/fleet.py): nothing else to probe per node.
            engines=("noop",)
            if virtual
            else tuple(e.strip() for e in engines.split(",") if e.strip()),
            cpu_millis=parse_cpu(cpu) if cpu else 0,
            memory_bytes=parse_size(memory) if memory else 0,
            gpus=gpus,
            max_executions=max_executions,
            allow_local_paths=tuple(AllowedPath.parse(a) for a in allow),
            heartbeat_interval=heartbeat_interval,
            state_dir=state_dir / node_id,
            network=not no_network,
            image_pull=image_pull,
            pull_timeout=pull_timeout,
            registry_auth=registry_auth,
        )

    async def main() -> None:
        bus = await Bus.connect(
            url, creds=creds, name=f"shoal-compute-{node_id}", replicas=replicas, tls_ca=ca
        )
        ready = Ready()
        try:
            if virtual:
                async with (
                    probes(metrics_port, metrics_host, [bus], ready),
                    Fleet(bus, config, virtual) as fleet,
                    keep_fresh(
                        health_file,
                        lambda: compute_health(name, list(fleet.agents.values()), bus),
                    ),
                ):
                    ready.check = lambda: all(a.registered for a in fleet.agents.values())
                    info(
                        f"{virtual} virtual nodes {node_id}-0..{node_id}-{virtual - 1} "
                        f"running against {url}"
                    )
                    await until_signalled()
                return
            async with (
                probes(metrics_port, metrics_host, [bus], ready),
                ComputeAgent(bus, config) as agent,
                keep_fresh(health_file, lambda: compute_health(name, [agent], bus)),
            ):
                ready.check = lambda: agent.registered
                info(
                    f"compute node {node_id} running against {url} "
                    f"(engines: {', '.join(sorted(agent.engines))})"
                )
                await until_signalled()
        finally:
            await bus.close()

    with errors_to_exit():
        run(main())
