"""`shoal job …`: validate, run, describe, list, executions, history, stop, versions, rerun,
purge (logs and get: cli/job_output.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from cli.common import with_client, with_namespace
from cli.job_display import (
    HISTORY_PAGE,
    WaitDisplay,
    print_executions,
    print_history,
    print_job,
    print_jobs,
    still_waiting,
    when,
)
from cli.job_output import get, logs, print_outputs
from cli.output import (
    EXIT_JOB_FAILED,
    EXIT_OK,
    EXIT_WAIT_TIMEOUT,
    FORMATS,
    emit,
    errors_to_exit,
    info,
    print_table,
)
from cli.specfile import load_spec_file
from shared import wire
from shared.spec import JobSpec
from shared.views import execution_counts, state_line

if TYPE_CHECKING:
    from shared.client import ShoalClient

var_option = click.option(
    "-V",
    "--var",
    "variables",
    multiple=True,
    metavar="KEY=VALUE",
    help="Template variable (repeatable).",
)
env_option = click.option(
    "-E",
    "--env-vars",
    "env_regex",
    default=None,
    metavar="REGEX",
    help="Take template variables from environment variables matching REGEX.",
)


@click.group()
def job() -> None:
    """Submit and inspect jobs."""


job.add_command(logs)
job.add_command(get)


@job.command()
@click.argument("file")
@var_option
@env_option
@click.option("-o", "--output", "fmt", type=FORMATS, default="yaml", show_default=True)
def validate(file: str, variables: tuple[str, ...], env_regex: str | None, fmt: str) -> None:
    """Check a job spec (FILE or - for stdin) and print it normalized."""
    with errors_to_exit():
        spec, _ = load_spec_file(file, variables, env_regex)
        emit(spec, "yaml" if fmt == "table" else fmt)
        info(f"{file}: valid {spec.type} job")
    raise SystemExit(EXIT_OK)


def _placed(view: wire.JobView) -> bool:
    """For daemon/service `--wait`: every placement is running."""
    counts = execution_counts(view)
    running = counts.get("running", 0)
    pending = counts.get("offered", 0) + counts.get("accepted", 0)
    if view.type == "service":
        return running >= (view.count or 1) and not pending
    return bool(running) and not pending


@job.command()
@click.argument("file")
@var_option
@env_option
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="Wait for the job to finish (daemon/service: until placed and running).",
)
@click.option("--wait-timeout", type=float, default=600.0, show_default=True, metavar="S")
@click.option("--id-only", is_flag=True, help="Print only the job id.")
@click.option("--force", is_flag=True, help="Submit even if an identical version exists.")
@click.option("-o", "--output", "fmt", type=FORMATS, default="table", show_default=True)
@click.pass_context
def run(
    ctx: click.Context,
    file: str,
    variables: tuple[str, ...],
    env_regex: str | None,
    wait: bool,
    wait_timeout: float,
    id_only: bool,
    force: bool,
    fmt: str,
) -> None:
    """Submit a job spec (FILE or -) and, by default, wait for it and print its output."""
    with errors_to_exit():
        spec, _ = load_spec_file(file, variables, env_regex)
    submit_and_wait(
        ctx, spec, wait=wait, wait_timeout=wait_timeout, id_only=id_only, fmt=fmt, force=force
    )


def submit_and_wait(
    ctx: click.Context,
    spec: JobSpec,
    *,
    wait: bool,
    wait_timeout: float,
    id_only: bool,
    fmt: str,
    force: bool = False,
) -> None:
    """Submit, then (by default) wait with a status line and print the output; exits."""

    root = ctx.find_root().ensure_object(dict)
    if "namespace" in spec.model_fields_set and not root.get("namespace"):
        root["namespace"] = spec.namespace  # the spec says where it goes; -n would say too

    async def action(client: ShoalClient) -> int:
        reply = await client.submit_full(spec, force=force)
        for warning in reply.warnings:
            info(f"note: {warning}")
        if id_only:
            click.echo(reply.job_id)
        elif reply.changed:
            info(f"Job {reply.job_id} submitted (version {reply.version}).")
        if not wait:
            return EXIT_OK
        if not reply.changed:  # nothing was submitted: say what the version did, not replay it
            was = await client.describe(reply.job_id, reply.version)
            if was.terminal:
                info(
                    f"Nothing ran: job {was.id} version {was.version} had already ended "
                    f"{state_line(was)}. Its output: shoal job logs {was.id} --version "
                    f"{was.version}"
                )
                if fmt != "table" and not id_only:
                    emit(was, fmt)
                return EXIT_JOB_FAILED if was.state in ("Failed", "Stopped") else EXIT_OK
            info(f"Waiting for job {was.id} version {was.version}, which is {state_line(was)}.")
        until = None if spec.type in ("batch", "ops") else _placed
        status = WaitDisplay(enabled=not id_only)
        try:  # on_change always: it also keeps the last view, for the timeout's message
            view = await client.wait(
                reply.job_id,
                wait_timeout,
                until=until,
                on_change=status.show,
                version=reply.version,
            )
        except TimeoutError:
            status.done()
            info(still_waiting(reply.job_id, wait_timeout, status.last))
            return EXIT_WAIT_TIMEOUT
        status.done()
        if id_only:
            pass
        elif fmt != "table":
            emit(view, fmt)
        else:
            await print_outputs(client, view)
            info(f"Job {view.id} {state_line(view)}")
        return EXIT_JOB_FAILED if view.state in ("Failed", "Stopped") else EXIT_OK

    raise SystemExit(with_client(ctx, action))


@job.command()
@click.argument("job_id")
@click.option("--version", type=int, default=0, help="Show this version (default: current).")
@click.option("-o", "--output", "fmt", type=FORMATS, default="table", show_default=True)
@click.pass_context
def describe(ctx: click.Context, job_id: str, version: int, fmt: str) -> None:
    """Show a job's state and executions."""
    view = with_client(ctx, lambda c: c.describe(job_id, version))
    if fmt == "table":
        print_job(view)
    else:
        emit(view, fmt)


@job.command("list")
@click.option(
    "-A",
    "--all-namespaces",
    "every_namespace",
    is_flag=True,
    help="Jobs of every namespace (an admin's credentials).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Show the newest this many.",
)
@click.option("--all", "every", is_flag=True, help="Show every job (no --limit).")
@click.option("-o", "--output", "fmt", type=FORMATS, default="table", show_default=True)
@click.pass_context
def list_jobs(ctx: click.Context, every_namespace: bool, limit: int, every: bool, fmt: str) -> None:
    """List a namespace's jobs (-A: every namespace's), newest first."""
    # One more than shown tells whether the limit left some out.
    jobs = with_client(
        ctx, lambda c: c.jobs(limit=limit + 1, every=every, all_namespaces=every_namespace)
    )
    more = not every and len(jobs) > limit
    jobs = jobs if every else jobs[:limit]
    if fmt != "table":
        emit(jobs, fmt)
    else:
        print_jobs(jobs)
    if more:
        info(
            f"The newest {limit} jobs are shown, and there are more: --limit {limit * 2} "
            "shows more, --all shows every job."
        )


@job.command()
@click.argument("job_id")
@click.option("-o", "--output", "fmt", type=FORMATS, default="table", show_default=True)
@click.option("--offset", type=int, default=0, show_default=True, help="Skip this many.")
@click.option(
    "--limit",
    type=click.IntRange(1, 1000),
    default=1000,
    show_default=True,
    help="Show at most this many.",
)
@click.pass_context
def executions(ctx: click.Context, job_id: str, fmt: str, offset: int, limit: int) -> None:
    """List every execution of a job, all versions and attempts, oldest first."""
    page = with_client(ctx, lambda c: c.execution_page(job_id, offset, limit))
    if fmt == "table":
        print_executions(page.executions)
    else:
        emit(page.executions, fmt)
    if offset + len(page.executions) < page.total:
        click.echo(
            f"{len(page.executions)} of {page.total} shown; the next ones: --offset "
            f"{offset + len(page.executions)}",
            err=True,
        )


@job.command()
@click.argument("job_id")
@click.option("-o", "--output", "fmt", type=FORMATS, default="table", show_default=True)
@click.option(
    "--after",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Only the events after this one (the number a limited listing ends with).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=0,
    help="Show at most this many events (default: all of them).",
)
@click.pass_context
def history(ctx: click.Context, job_id: str, fmt: str, after: int, limit: int) -> None:
    """Every state change of a job and its executions, with time and reason, oldest first.

    A table is printed page by page as the pages arrive: a job of 100,000 partitions has
    some 300,000 events."""

    async def action(client: ShoalClient) -> None:
        collected: list[wire.JobEvent] = []
        shown, cursor, first = 0, after, True
        while not limit or shown < limit:
            want = min(HISTORY_PAGE, limit - shown) if limit else HISTORY_PAGE
            page = await client.history_page(job_id, cursor, want)
            events = page.events
            if fmt == "table":
                print_history(events, header=first)
            else:
                collected.extend(events)
            shown, first = shown + len(events), False
            if not page.next or page.next <= cursor:
                if fmt != "table":
                    emit(collected, fmt)
                return
            cursor = page.next
        if fmt != "table":
            emit(collected, fmt)
        info(f"{shown} events shown; the next ones: --after {cursor}")

    with_client(ctx, action)


@job.command()
@click.argument("job_id")
@click.option("--reason", default="stopped by user", show_default=True)
@click.option("-o", "--output", "fmt", type=FORMATS, default="table", show_default=True)
@click.pass_context
def stop(ctx: click.Context, job_id: str, reason: str, fmt: str) -> None:
    """Stop a job: every execution is cancelled and the job ends Stopped."""

    async def action(client: ShoalClient) -> wire.JobView:
        before = await client.describe(job_id)
        after = await client.stop(before.id, reason)
        if before.state in ("Completed", "Failed", "Stopped"):
            info(f"Job {before.id} had already ended ({before.state}); nothing to stop.")
        else:
            info(f"Job {after.id} stopped.")
        return after

    view = with_client(ctx, action)
    if fmt != "table":
        emit(view, fmt)


@job.command()
@click.argument("job_id")
@click.option("-o", "--output", "fmt", type=FORMATS, default="table", show_default=True)
@click.pass_context
def versions(ctx: click.Context, job_id: str, fmt: str) -> None:
    """Every version of a job's spec."""
    items = with_client(ctx, lambda c: c.versions(job_id))
    if fmt != "table":
        emit(items, fmt)
        return
    print_table(["VERSION", "SUBMITTED"], [[v.version, when(v.submitted_at)] for v in items])


@job.command()
@click.argument("job_id")
@click.pass_context
def rerun(ctx: click.Context, job_id: str) -> None:
    """Run a job's current spec again, as a new version."""
    reply = with_client(ctx, lambda c: c.rerun(job_id))
    info(f"Job {reply.job_id} is running again as version {reply.version}.")
    click.echo(reply.job_id)


@job.command()
@click.argument("job_ids", nargs=-1, required=True, metavar="ID...")
@click.pass_context
def purge(ctx: click.Context, job_ids: tuple[str, ...]) -> None:
    """Remove jobs that have ended, with their executions, versions, history, logs and
    results, now rather than after the orchestrator's --job-retention."""

    async def action(client: ShoalClient) -> None:
        for job_id in job_ids:
            gone = await client.purge(job_id)
            info(f"Job {gone.id} ({gone.state}) purged.")

    with_client(ctx, action)


with_namespace(job, skip=("validate",))
