"""Entry point of the `shoal` command: the root group, global options, lazily loaded commands."""

from __future__ import annotations

import importlib
from typing import Any

import click

# Commands by name -> (module, attribute). Loading only the one invoked keeps `shoal job
# validate` from paying for nats, wasmtime and aiodocker imports it does not use.
COMMANDS: dict[str, tuple[str, str]] = {
    "job": ("cli.job", "job"),
    "node": ("cli.node", "node"),
    "orchestrator": ("cli.services", "orchestrator"),
    "compute": ("cli.services", "compute"),
    "devstack": ("cli.services", "devstack"),
    "wasm": ("cli.shortcuts", "wasm"),
    "docker": ("cli.shortcuts", "docker"),
    "auth": ("cli.auth", "auth"),
    "health": ("cli.health", "health"),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        where = COMMANDS.get(cmd_name)
        if where is None:
            return None
        module = importlib.import_module(where[0])
        command: Any = getattr(module, where[1], None)
        return command if isinstance(command, click.Command) else None


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--nats",
    "nats_url",
    envvar="SHOAL_NATS_URL",
    default="nats://127.0.0.1:4222",
    show_default=True,
    help="NATS server URL(s), comma-separated.",
)
@click.option("--creds", envvar="SHOAL_CREDS", default=None, help="NATS credentials file.")
@click.option(
    "--tls-ca",
    envvar="SHOAL_TLS_CA",
    default=None,
    help="CA certificate to verify the NATS server's TLS certificate.",
)
@click.pass_context
def shoal(ctx: click.Context, nats_url: str, creds: str | None, tls_ca: str | None) -> None:
    """Shoal runs Bacalhau-style jobs on a fleet over NATS."""
    ctx.ensure_object(dict)
    ctx.obj["nats"] = nats_url
    ctx.obj["creds"] = creds
    ctx.obj["tls_ca"] = tls_ca


def main() -> None:
    shoal(prog_name="shoal")
