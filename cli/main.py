"""Entry point of the `shoal` command: the root group and its global options."""

from __future__ import annotations

import click

from cli.job import job
from cli.node import node
from cli.services import compute, devstack, orchestrator
from cli.shortcuts import wasm


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--nats",
    "nats_url",
    envvar="SHOAL_NATS_URL",
    default="nats://127.0.0.1:4222",
    show_default=True,
    help="NATS server URL(s), comma-separated.",
)
@click.option("--creds", envvar="SHOAL_CREDS", default=None, help="NATS credentials file.")
@click.pass_context
def shoal(ctx: click.Context, nats_url: str, creds: str | None) -> None:
    """Shoal runs Bacalhau-style jobs on a fleet over NATS."""
    ctx.ensure_object(dict)
    ctx.obj["nats"] = nats_url
    ctx.obj["creds"] = creds


for command in (job, node, orchestrator, compute, devstack, wasm):
    shoal.add_command(command)


def main() -> None:
    shoal(prog_name="shoal")
