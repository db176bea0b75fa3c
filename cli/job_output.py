"""`shoal job logs` and `shoal job get`: a job version's output and results, and how to print it."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cli.common import short, with_client
from cli.output import info
from shared import wire

if TYPE_CHECKING:
    from shared.client import ShoalClient
    from shared.logs import LogLine

version_option = click.option(
    "--version",
    type=click.IntRange(min=0),
    default=0,
    help="This version of the job (default: the latest).",
)


class LinePrinter:
    """Writes output as it comes, stdout to stdout and stderr to stderr; with `prefix`, line
    by line, each line led by where it ran: `[p<partition> <execution>]` (ops and daemon
    jobs: `[<node> <execution>]`)."""

    def __init__(self, job_type: str, *, prefix: bool) -> None:
        self._by_node = job_type in ("ops", "daemon")
        self._prefix = prefix
        # An execution's stream's last line while it has no newline yet, and its label.
        self._partial: dict[tuple[str, str], tuple[bytes, bytes]] = {}

    def write(self, line: LogLine) -> None:
        out = sys.stdout.buffer if line.stream == "stdout" else sys.stderr.buffer
        if not self._prefix:
            out.write(line.data)
            out.flush()
            return
        key = (line.execution_id, line.stream)
        label, begun = self._partial.pop(key, (self._label(line), b""))
        *whole, rest = (begun + line.data).split(b"\n")
        for text in whole:
            out.write(label + text + b"\n")
        if rest:
            self._partial[key] = (label, rest)
        out.flush()

    def close(self) -> None:
        """Ends the lines still without a newline (their execution's output ended there)."""
        for (_, stream), (label, rest) in self._partial.items():
            out = sys.stdout.buffer if stream == "stdout" else sys.stderr.buffer
            out.write(label + rest + b"\n")
            out.flush()
        self._partial.clear()

    def _label(self, line: LogLine) -> bytes:
        where = line.node_id if self._by_node else f"p{line.partition}"
        name = short(line.execution_id)
        return (f"[{where} {name}] " if where else f"[{name}] ").encode()


async def print_outputs(client: ShoalClient, view: wire.JobView) -> None:
    """The output of the version `view` shows, as it was printed (`shoal job run`)."""
    printer = LinePrinter(view.type, prefix=False)
    async for line in client.logs(view.id, version=view.version):
        printer.write(line)


@click.command()
@click.argument("job_id")
@click.option(
    "-f",
    "--follow",
    is_flag=True,
    help="Go on printing new output (a replaced execution's too) until the version has ended "
    "and all its output is printed.",
)
@click.option("-e", "--execution", default="", help="Only this execution id (any version).")
@version_option
@click.option(
    "--prefix/--no-prefix",
    default=None,
    help="Start each line with its partition (ops, daemon: node) and execution. "
    "[default: when the version has more than one execution]",
)
@click.pass_context
def logs(
    ctx: click.Context,
    job_id: str,
    follow: bool,
    execution: str,
    version: int,
    prefix: bool | None,
) -> None:
    """Print a job version's output (stdout to stdout, stderr to stderr)."""

    async def action(client: ShoalClient) -> None:
        view = await client.describe(job_id, version)
        several = view.executions_total > 1 or (view.count or 1) > 1
        printer = LinePrinter(view.type, prefix=several if prefix is None else prefix)
        try:
            async for line in client.logs(
                view.id, follow=follow, execution_id=execution, version=version
            ):
                printer.write(line)
        finally:
            printer.close()

    with contextlib.suppress(KeyboardInterrupt):
        with_client(ctx, action)


@click.command()
@click.argument("job_id")
@version_option
@click.option(
    "--output-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Where to put the results (default: ./<job-id>).",
)
@click.pass_context
def get(ctx: click.Context, job_id: str, version: int, output_dir: Path | None) -> None:
    """Download a version's results: per execution, stdout, stderr, exitCode, one folder per
    result path."""

    async def action(client: ShoalClient) -> tuple[wire.JobView, Path, list[Path]]:
        view = await client.describe(job_id, version)
        dest = output_dir or Path(view.id)
        return view, dest, await client.results(view.id, dest, view.version)

    view, dest, folders = with_client(ctx, action)
    which = f"job {view.id} version {view.version}"
    if not folders:
        info(
            f"No results for {which}: it has not finished, or used the noop publisher; "
            "nothing was written."
        )
        return
    for folder in folders:
        click.echo(str(folder))
    info(
        f"Wrote the results of {which} to {dest.resolve()}{os.sep}: one folder per "
        f"execution ({len(folders)}), each with stdout, stderr, exitCode and the result paths."
    )
