"""Glue between click commands and the async client: connection options and error mapping."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import click

from cli.output import errors_to_exit

if TYPE_CHECKING:
    from shared.client import ShoalClient

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on uvloop where it is installed (about a third less CPU per message for
    nats-py); SHOAL_EVENT_LOOP=asyncio picks the standard loop."""
    if os.environ.get("SHOAL_EVENT_LOOP", "uvloop") != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(main)
    return asyncio.run(main)


def connection(ctx: click.Context) -> tuple[str, str | None]:
    root = ctx.find_root()
    obj = root.obj or {}
    return obj.get("nats", "nats://127.0.0.1:4222"), obj.get("creds")


def tls_ca(ctx: click.Context) -> str | None:
    obj = ctx.find_root().obj or {}
    value = obj.get("tls_ca")
    return str(value) if value else None


def _store_namespace(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value:
        ctx.find_root().ensure_object(dict)["namespace"] = value


def namespace_option() -> click.Option:
    """`-n/--namespace`, for every command about a namespace's jobs (or secrets)."""
    return click.Option(
        ["-n", "--namespace", "namespace_"],
        expose_value=False,
        envvar="SHOAL_NAMESPACE",
        callback=_store_namespace,
        metavar="NAMESPACE",
        help="The namespace (tenant) whose jobs these are [env var: SHOAL_NAMESPACE; default: "
        "the --creds file's namespace, else default].",
    )


def with_namespace(group: click.Group, *, skip: tuple[str, ...] = ()) -> None:
    """Give every command of `group` (but `skip`) the `-n/--namespace` option."""
    for name, command in group.commands.items():
        if name not in skip and "namespace_" not in {p.name for p in command.params}:
            command.params.append(namespace_option())


def with_client(ctx: click.Context, action: Callable[[ShoalClient], Awaitable[T]]) -> T:
    """Connect (failing fast when NATS is unreachable), run `action`, map errors to exits."""
    url, creds = connection(ctx)
    ca = tls_ca(ctx)
    namespace = str((ctx.find_root().obj or {}).get("namespace") or "")

    from shared.client import ShoalClient

    async def main() -> T:
        async with await ShoalClient.connect(url, creds, tls_ca=ca, namespace=namespace) as client:
            return await action(client)

    with errors_to_exit():
        return run(main())
    raise AssertionError("unreachable")


def size(ctx: click.Context, param: click.Parameter, value: str | int) -> int:
    """A click callback for a size option (`1Gi`, `512Mi`, `1000000`): bytes."""
    if isinstance(value, int):
        return value
    from shared.units import parse_size

    try:
        return parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def duration(ctx: click.Context, param: click.Parameter, value: str | float) -> float:
    """A click callback for a duration option: seconds, or a Go duration (`24h`, `90m`,
    `1h30m`, `45s`); the value in seconds."""
    if isinstance(value, float | int):
        return float(value)
    from shared.units import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def short(identifier: str) -> str:
    """Ids in tables: `j-` plus 8 characters is unique enough to type back as a prefix."""
    return identifier[:10]
