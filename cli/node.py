"""`shoal node …`: list, describe, approve, reject, drain, undrain, remove."""

from __future__ import annotations

import time

import click

from cli.common import with_client
from cli.output import FORMATS, emit, print_table
from shared import wire
from shared.units import format_cpu, format_size


@click.group()
def node() -> None:
    """Inspect and manage compute nodes."""


def _capacity(c: wire.Capacity | None) -> str:
    if c is None:
        return ""
    return f"{format_cpu(c.cpu_millis)} CPU, {format_size(c.memory_bytes)}"


def _table(nodes: list[wire.NodeView]) -> None:
    now = time.time()
    print_table(
        ["ID", "CONNECTION", "APPROVAL", "ENGINES", "FREE", "RUNNING", "LAST SEEN", "LABELS"],
        [
            [
                n.id,
                n.connection + (" (draining)" if n.drain else ""),
                n.approval,
                ",".join(n.engines),
                _capacity(n.free),
                len(n.running),
                f"{now - n.last_seen:.1f}s ago" if n.last_seen else "",
                ",".join(
                    f"{k}={v}"
                    for k, v in sorted(n.labels.items())
                    if k not in ("Operating-System", "Architecture")
                ),
            ]
            for n in nodes
        ],
    )


@node.command("list")
@click.option("-o", "--output", "fmt", type=FORMATS, default="table", show_default=True)
@click.pass_context
def list_nodes(ctx: click.Context, fmt: str) -> None:
    """List every registered node."""
    nodes = with_client(ctx, lambda c: c.nodes())
    if fmt == "table":
        _table(nodes)
    else:
        emit(nodes, fmt)


@node.command()
@click.argument("node_id")
@click.option("-o", "--output", "fmt", type=FORMATS, default="yaml", show_default=True)
@click.pass_context
def describe(ctx: click.Context, node_id: str, fmt: str) -> None:
    """Show one node: labels, capacity, free resources, running executions."""
    view = with_client(ctx, lambda c: c.node(node_id))
    emit(view, "yaml" if fmt == "table" else fmt)


def _action(name: str, help_text: str) -> click.Command:
    @click.command(name=name, help=help_text)
    @click.argument("node_id")
    @click.option("-o", "--output", "fmt", type=FORMATS, default="table", show_default=True)
    @click.pass_context
    def command(ctx: click.Context, node_id: str, fmt: str) -> None:
        view = with_client(ctx, lambda c: c.node_action(name, node_id))
        if fmt == "table":
            _table([view])
        else:
            emit(view, fmt)

    return command


node.add_command(_action("approve", "Let a node run jobs."))
node.add_command(_action("reject", "Refuse a node: it runs nothing."))
node.add_command(_action("drain", "Stop new placements on a node and move service replicas off."))
node.add_command(_action("undrain", "Let a drained node take new work again."))


@node.command()
@click.argument("node_id")
@click.option("-o", "--output", "fmt", type=FORMATS, default="table", show_default=True)
@click.pass_context
def remove(ctx: click.Context, node_id: str, fmt: str) -> None:
    """Forget a DISCONNECTED node (its full id): it leaves `node list` and the reasons jobs
    give for not running. A connected node is refused: drain it, stop its agent, then remove
    it. If its agent comes back, the node registers again. The orchestrator removes nodes
    disconnected for longer than its --node-gc-after (24h) by itself."""
    view = with_client(ctx, lambda c: c.node_action("remove", node_id))
    if fmt == "table":
        click.echo(f"removed node {view.id}")
    else:
        emit(view, fmt)
