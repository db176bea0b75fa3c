"""`shoal secret …`: create, list and delete a namespace's secrets (never shown once stored)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from cli.common import with_client, with_namespace
from cli.output import FORMATS, emit, print_table
from shared import subjects, wire
from shared.errors import Problem, Unavailable, error_from_code

if TYPE_CHECKING:
    from shared.client import ShoalClient

T = TypeVar("T")


def secret_subject(namespace: str, verb: str) -> str:
    """`shoal.v1.ns.<namespace>.api.secret.<verb>`: the namespace's own subject, which its
    users (and admins) may publish on."""
    return subjects.ns_api(namespace, f"secret.{verb}")


async def call(client: ShoalClient, namespace: str, verb: str, request: Any, kind: type[T]) -> T:
    """One `secret.<verb>` request on the namespace's subject, its answer decoded (an error
    answer raised as the error it was)."""
    try:
        raw = await client.bus.request(
            secret_subject(namespace, verb), wire.encode(request), timeout=client.timeout
        )
    except Unavailable as exc:
        raise Unavailable(
            f"no orchestrator answered secret.{verb} ({exc}); is one running?"
        ) from None
    reply = wire.decode(raw, wire.ApiReply, what=f"secret.{verb} reply")
    if not reply.ok:
        err = reply.error or wire.ApiError(code="error", message="request failed")
        problems = [Problem(p.path, p.message) for p in err.details]
        raise error_from_code(err.code, err.message, problems)
    return wire.decode(reply.data, kind, what=f"secret.{verb} reply")


@click.group()
def secret() -> None:
    """Secrets a job's Env refers to as `secret:<name>`: stored encrypted, shown never, given
    only to the node that runs the job, encrypted for it."""


def _value(from_file: str | None, from_literal: str | None) -> str:
    if (from_file is None) == (from_literal is None):
        raise click.UsageError("give the value with exactly one of --from-file or --from-literal")
    if from_literal is not None:
        return from_literal
    assert from_file is not None
    try:
        data = sys.stdin.buffer.read() if from_file == "-" else Path(from_file).read_bytes()
    except OSError as exc:
        raise click.BadParameter(str(exc), param_hint="--from-file") from None
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise click.BadParameter(
            f"{from_file} is not UTF-8 text: a secret becomes an environment variable",
            param_hint="--from-file",
        ) from None


@secret.command()
@click.argument("name")
@click.option(
    "--from-file",
    metavar="FILE",
    help="The value: this file's content, exactly ('-' reads it from stdin).",
)
@click.option(
    "--from-literal",
    metavar="VALUE",
    help="The value itself (it stays in your shell history: prefer --from-file).",
)
@click.option("--update", is_flag=True, help="Replace the value of an existing secret.")
@click.option("-o", "--output", "fmt", type=FORMATS, default="table", show_default=True)
@click.pass_context
def create(
    ctx: click.Context,
    name: str,
    from_file: str | None,
    from_literal: str | None,
    update: bool,
    fmt: str,
) -> None:
    """Store secret NAME (letters, digits, '_' and '-'), encrypted; a job uses it with
    `Env: {VAR: "secret:NAME"}`."""
    value = _value(from_file, from_literal)

    async def action(client: ShoalClient) -> wire.SecretView:
        ns = client.namespace
        request = wire.SecretCreateRequest(name=name, value=value, namespace=ns, update=update)
        return await call(client, ns, "create", request, wire.SecretView)

    view = with_client(ctx, action)
    if fmt == "table":
        done = "updated" if view.updated_at > view.created_at else "created"
        click.echo(f"secret {view.name} {done} in namespace {view.namespace}")
    else:
        emit(view, fmt)


@secret.command("list")
@click.option("-o", "--output", "fmt", type=FORMATS, default="table", show_default=True)
@click.pass_context
def list_secrets(ctx: click.Context, fmt: str) -> None:
    """List the namespace's secrets: names and times, never values."""

    async def action(client: ShoalClient) -> wire.SecretList:
        ns = client.namespace
        return await call(client, ns, "list", wire.SecretListRequest(namespace=ns), wire.SecretList)

    found = with_client(ctx, action).secrets
    if fmt != "table":
        emit(found, fmt)
        return
    print_table(
        ["NAME", "NAMESPACE", "CREATED", "UPDATED"],
        [[s.name, s.namespace, _when(s.created_at), _when(s.updated_at)] for s in found],
    )


@secret.command()
@click.argument("name")
@click.pass_context
def delete(ctx: click.Context, name: str) -> None:
    """Delete secret NAME: jobs referring to it are refused from then on, and their
    executions not yet placed fail."""

    async def action(client: ShoalClient) -> wire.SecretView:
        ns = client.namespace
        return await call(
            client, ns, "delete", wire.SecretRef(name=name, namespace=ns), wire.SecretView
        )

    view = with_client(ctx, action)
    click.echo(f"secret {view.name} deleted from namespace {view.namespace}")


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) if at else ""


with_namespace(secret)
