"""`shoal devstack`: NATS (embedded), an orchestrator and N compute agents in one process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from cli.common import run
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
from compute.inputs import AllowedPath
from orchestrator.service import Orchestrator, OrchestratorConfig
from shared.bus import Bus
from shared.natsserver import EmbeddedNats


@click.command()
@click.option(
    "--computes",
    type=int,
    default=3,
    show_default=True,
    help="Compute agents to start (node-0, node-1, ...); 0 for none.",
)
@click.option("--nats-port", type=int, default=4222, show_default=True)
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    default=Path(".shoal/devstack"),
    show_default=True,
)
@click.option("--engines", default="wasm,noop,docker", show_default=True)
@click.option("--allow-local-path", "allow", multiple=True, metavar="DIR[:rw]")
@orchestrator_settings
@with_options(metrics_options)
@click.option("-v", "--verbose", is_flag=True)
def devstack(
    computes: int,
    nats_port: int,
    state_dir: Path,
    engines: str,
    allow: tuple[str, ...],
    settings: dict[str, Any],
    metrics_port: int,
    metrics_host: str,
    verbose: bool,
) -> None:
    """NATS (embedded) + an orchestrator + N compute agents in one process."""
    setup_logging(verbose)
    config = OrchestratorConfig(
        **settings,
        secrets_key=state_dir / "secrets.key",  # made on the first start, kept across restarts
    )

    async def main() -> None:
        server = EmbeddedNats(state_dir / "nats", port=nats_port)
        await server.start()
        buses: list[Bus] = []
        agents: list[ComputeAgent] = []
        try:
            bus = await Bus.connect(server.url, name="shoal-orchestrator")
            buses.append(bus)
            ready = Ready()
            async with (
                probes(metrics_port, metrics_host, buses, ready),
                Orchestrator(bus, config) as orch,
                serving(orch, ready),
            ):
                ready.check = lambda: False  # until every agent below is registered
                for i in range(computes):
                    agent_bus = await Bus.connect(server.url, name=f"shoal-compute-node-{i}")
                    buses.append(agent_bus)
                    agent = ComputeAgent(
                        agent_bus,
                        AgentConfig(
                            name=f"node-{i}",
                            engines=tuple(e.strip() for e in engines.split(",") if e.strip()),
                            allow_local_paths=tuple(AllowedPath.parse(a) for a in allow),
                            heartbeat_interval=settings["heartbeat_interval"],
                            state_dir=state_dir / "compute" / f"node-{i}",
                        ),
                    )
                    await agent.start()
                    agents.append(agent)
                ready.check = lambda: all(a.registered for a in agents)
                info(f"Shoal devstack is up: {computes} compute node(s).")
                info(f"  NATS: {server.url}")
                info(f"  export SHOAL_NATS_URL={server.url}")
                info("  try:  shoal job run examples/hello-wasm.yaml")
                info("Ctrl-C to stop.")
                click.echo(server.url)
                await until_signalled()
                info("stopping...")
                for agent in agents:
                    await agent.stop()
        finally:
            for b in buses:
                await b.close()
            await server.stop()

    with errors_to_exit():
        run(main())
