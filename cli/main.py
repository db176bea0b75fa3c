"""Entry point of the `shoal` command: the root group, global options, lazily loaded commands."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click

# Commands by name -> (module, attribute). Loading only the one invoked keeps `shoal job
# validate` from paying for nats, wasmtime and aiodocker imports it does not use.
COMMANDS: dict[str, tuple[str, str]] = {
    "job": ("cli.job", "job"),
    "node": ("cli.node", "node"),
    "secret": ("cli.secret", "secret"),
    "orchestrator": ("cli.services", "orchestrator"),
    "compute": ("cli.services", "compute"),
    "devstack": ("cli.devstack", "devstack"),
    "wasm": ("cli.shortcuts", "wasm"),
    "docker": ("cli.shortcuts", "docker"),
    "auth": ("cli.auth", "auth"),
    "health": ("cli.health", "health"),
}

# Commands (and groups, with all their commands) that never connect to NATS: they take no
# connection options after their name.
LOCAL_COMMANDS = frozenset({"devstack", "health", "auth", "job validate"})

DEFAULT_NATS = "nats://127.0.0.1:4222"
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class _Connection:
    flag: str
    key: str  # in the root context's obj, where cli.common reads it
    envvar: str
    help: str
    default: str | None = None


CONNECTION = (
    _Connection(
        "--nats", "nats", "SHOAL_NATS_URL", "NATS server URL(s), comma-separated.", DEFAULT_NATS
    ),
    _Connection("--creds", "creds", "SHOAL_CREDS", "NATS credentials file."),
    _Connection(
        "--tls-ca",
        "tls_ca",
        "SHOAL_TLS_CA",
        "CA certificate to verify the NATS server's TLS certificate.",
    ),
)


def _store(key: str) -> Callable[[click.Context, click.Parameter, str | None], None]:
    def callback(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
        if value is not None:  # given after the command: wins over the root's (or the env)
            ctx.find_root().ensure_object(dict)[key] = value

    return callback


def _after_command(option: _Connection) -> click.Option:
    """The option as every connecting command takes it after its name, where people type
    it (`shoal compute --nats URL --name n1`); it sets what `shoal --nats URL` would."""
    return click.Option(
        [option.flag, f"{option.key}_after"],
        expose_value=False,
        callback=_store(option.key),
        metavar="TEXT",
        help=f"{option.help} [env var: {option.envvar}]",
    )


def _with_connection(command: click.Command, path: str) -> click.Command:
    """`command`, and every command under it, taking the connection options (once: loaded
    commands are module-level objects, asked for again by help and completion)."""
    if path in LOCAL_COMMANDS:
        return command
    names = {name for param in command.params for name in param.opts}
    command.params.extend(_after_command(o) for o in CONNECTION if o.flag not in names)
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            _with_connection(sub, f"{path} {name}")
    return command


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        where = COMMANDS.get(cmd_name)
        if where is None:
            return None
        module = importlib.import_module(where[0])
        command: Any = getattr(module, where[1], None)
        if not isinstance(command, click.Command):
            return None
        return _with_connection(command, cmd_name)


def _root_option(option: _Connection) -> Callable[[F], F]:
    return click.option(
        option.flag,
        option.key if option.key != "nats" else "nats_url",
        envvar=option.envvar,
        default=option.default,
        show_default=option.default is not None,
        show_envvar=True,
        help=option.help + " Also accepted after the command.",
    )


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@_root_option(CONNECTION[0])
@_root_option(CONNECTION[1])
@_root_option(CONNECTION[2])
@click.version_option(package_name="shoal", prog_name="shoal", message="%(prog)s %(version)s")
@click.pass_context
def shoal(ctx: click.Context, nats_url: str, creds: str | None, tls_ca: str | None) -> None:
    """Shoal runs Bacalhau-style jobs on a fleet over NATS."""
    ctx.ensure_object(dict)
    ctx.obj["nats"] = nats_url
    ctx.obj["creds"] = creds
    ctx.obj["tls_ca"] = tls_ca


def main() -> None:
    shoal(prog_name="shoal")
