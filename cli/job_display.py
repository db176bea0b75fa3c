"""How the CLI shows a job to a person: `describe`'s text, the executions and job tables, and
the lines `job run --wait` prints while it waits and when it stops waiting.

A job's state is shown as `shared.views.state_line` derives it (a service's replicas running
out of Count, then the job's message: `Running 0/2: waiting for nodes: …`); long messages and
errors are wrapped to the terminal, their own line breaks kept, never cut silently.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import UTC, datetime
from typing import get_args

import click

from cli.common import short
from cli.output import cut, info, print_table, terminal_width, wrap
from shared import wire
from shared.views import execution_counts, shown_state, state_line

LABEL = 11  # "Namespace: " and the other labels of describe, padded to one width


def when(ts: float) -> str:
    if not ts:
        return ""
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _field(label: str, value: str, width: int | None) -> None:
    """`Label:    value`, the value wrapped (and its own lines kept) under itself."""
    room = None if width is None else max(width - LABEL, 20)
    lines = wrap(value, room)
    click.echo(f"{label + ':':<{LABEL}}{lines[0]}".rstrip())
    for line in lines[1:]:
        click.echo((" " * LABEL + line).rstrip())


def print_job(view: wire.JobView, *, width: int | None = None) -> None:
    """`shoal job describe`: the job, its state with why, and its executions."""
    width = terminal_width() if width is None else width
    _field("ID", view.id, width)
    _field("Name", view.name, width)
    _field("Namespace", view.namespace, width)
    _field("Type", view.type, width)
    _field("State", state_line(view), width)
    _field("Version", str(view.version), width)
    if view.executions:
        click.echo("")
        print_executions(view.executions, width=width)
        if view.executions_total > len(view.executions):
            click.echo(
                f"(the newest {len(view.executions)} of {view.executions_total}: "
                f"`shoal job executions {view.id} --offset N` pages through them all)"
            )


# `job history` asks for its events this many at a time, and prints each page as it comes.
HISTORY_PAGE = 2000
# Its columns' widths, so that its pages line up: a time, "execution", a short id, a state.
_HISTORY_WIDTHS = (
    19,
    9,
    10,
    max(len(s) for s in (*get_args(wire.JobState), *get_args(wire.ComputeState))),
)


def print_history(events: list[wire.JobEvent], *, header: bool = True) -> None:
    """One row per event; `header=False` for the pages after the first."""
    print_table(
        ["TIME", "KIND", "EXECUTION", "STATE", "MESSAGE"],
        [[when(e.at), e.kind, short(e.execution_id), e.state, e.message] for e in events],
        header=header,
        min_widths=_HISTORY_WIDTHS,
    )


def print_executions(executions: list[wire.ExecutionView], *, width: int | None = None) -> None:
    """One row per execution; its error, last, wrapped under it when long or multi-line."""
    print_table(
        ["EXECUTION", "NODE", "PARTITION", "ATTEMPT", "DESIRED", "STATE", "EXIT", "ERROR"],
        [
            [
                short(e.id),
                e.node_id,
                e.partition,
                e.attempt,
                e.desired_state,
                e.compute_state,
                "" if e.exit_code is None else e.exit_code,
                e.error,
            ]
            for e in executions
        ],
        width=width,
    )


def print_jobs(jobs: list[wire.JobView], *, width: int | None = None) -> None:
    """`shoal job list`: one line a job, its message cut to the terminal with "…"
    (`describe` shows it whole)."""
    print_table(
        ["ID", "NAME", "TYPE", "STATE", "VERSION", "CREATED", "MESSAGE"],
        [
            [
                short(j.id),
                cut(j.name, 40),
                j.type,
                shown_state(j),
                j.version,
                when(j.created_at),
                j.state_message,
            ]
            for j in jobs
        ],
        last="cut",
        width=width,
    )


def status(view: wire.JobView, elapsed: float, width: int) -> str:
    """The one line `--wait` rewrites on a terminal: state, time, executions by state and why
    it waits; cut with "…" to fit `width` (a line that wrapped could not be rewritten)."""
    counts = ", ".join(f"{n} {s}" for s, n in sorted(execution_counts(view).items()))
    parts = [shown_state(view), f"{elapsed:.1f}s", counts, view.state_message]
    return cut("  ".join(p for p in parts if p), max(width - 1, 20))


def progress(view: wire.JobView) -> str:
    """What `--wait` prints, once per change, where it cannot rewrite a line (not a terminal):
    the job's state and why it is waiting."""
    return f"Job {view.id}: {state_line(view)}"


def still_waiting(job_id: str, seconds: float, view: wire.JobView | None) -> str:
    """`--wait`'s message when it gives up: what the job is doing and why, and how to follow
    it. `view`: the job as last seen (None if it could not be read)."""
    now = f" ({state_line(view)})" if view is not None else ""
    return f"Still not done after {seconds:g}s{now}; follow it with: shoal job describe {job_id}"


class WaitDisplay:
    """What `job run --wait` shows while it waits. On a terminal: one line on stderr,
    rewritten at each change (`status`). Elsewhere (a CI log, a pipe): a line (`progress`)
    each time the job states a new reason to wait, so a job that cannot start says why at
    once rather than in silence. `last`: the job as last seen, for `still_waiting`."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.tty = enabled and sys.stderr.isatty()
        self.last: wire.JobView | None = None
        self._started = time.monotonic()
        self._said = ""

    def show(self, view: wire.JobView) -> None:
        self.last = view
        if not self.enabled:
            return
        if self.tty:
            line = status(view, time.monotonic() - self._started, _stderr_columns())
            sys.stderr.write(f"\r\x1b[K{line}")
            sys.stderr.flush()
        elif view.state_message and not view.terminal and progress(view) != self._said:
            self._said = progress(view)
            info(self._said)

    def done(self) -> None:
        """Clears the status line (before the outputs and the last word are printed)."""
        if self.tty:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def _stderr_columns() -> int:
    """The width of the terminal stderr writes to: $COLUMNS, else its own, else 80 (a
    terminal that says 0: a pseudo-terminal nobody sized)."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns or 80
    except OSError:
        return 80
