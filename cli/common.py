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


def with_client(ctx: click.Context, action: Callable[[ShoalClient], Awaitable[T]]) -> T:
    """Connect (failing fast when NATS is unreachable), run `action`, map errors to exits."""
    url, creds = connection(ctx)
    ca = tls_ca(ctx)

    from shared.client import ShoalClient

    async def main() -> T:
        async with await ShoalClient.connect(url, creds, tls_ca=ca) as client:
            return await action(client)

    with errors_to_exit():
        return run(main())
    raise AssertionError("unreachable")


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
