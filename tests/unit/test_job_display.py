"""How the CLI shows a job: its state with the replicas a service runs and why it waits, long
messages and errors wrapped (never cut silently), an error's own line breaks kept."""

from __future__ import annotations

import re
import sys

import pytest

from cli.job_display import (
    WaitDisplay,
    print_executions,
    print_history,
    print_job,
    print_jobs,
    status,
    still_waiting,
)
from cli.output import print_table
from shared import wire
from shared.views import shown_state, state_line

REASONS = (
    'not enough nodes to run job: 1 execution(s) could not be placed: 3 nodes declined: "image '
    'foo:1 is not on this node (and this node does not pull)" (node-0, node-1); "local path /x '
    "is not under an allowed directory (allowed: none; start the agent with "
    '--allow-local-path)" (node-2)'
)
# What the wasm engine says of a WAT module that does not parse, once it keeps the lines.
COMPILE_ERROR = (
    "/app/bad.wasm is not a valid wasm module: unknown operator or unexpected token; and a "
    "longer first line to wrap\n"
    "     --> <anon>:1:19\n"
    "      |\n"
    "    1 | (module (func $f (unknown)))\n"
    "      |                   ^"
)
WAITING = "waiting for nodes: does not match constraint region = mars (3 nodes: a, b, c)"


def execution(error: str, state: wire.ComputeState = "failed") -> wire.ExecutionView:
    return wire.ExecutionView(
        id="e-0123456789abcdef",
        node_id="node-0",
        partition=0,
        attempt=1,
        desired_state="stopped",
        compute_state=state,
        error=error,
    )


def job(
    type: str = "batch",
    state: wire.JobState = "Failed",
    message: str = "",
    *,
    count: int | None = None,
    counts: dict[str, int] | None = None,
    executions: list[wire.ExecutionView] | None = None,
) -> wire.JobView:
    return wire.JobView(
        id="j-0123456789",
        name="n",
        namespace="default",
        type=type,
        state=state,
        state_message=message,
        count=count,
        execution_counts=counts or {},
        executions=executions or [],
    )


def words(text: str) -> list[str]:
    return text.split()


@pytest.fixture(autouse=True)
def _no_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)


def test_describe_wraps_a_long_message_and_error_instead_of_cutting_them(
    capsys: pytest.CaptureFixture[str],
) -> None:
    long_error = "image foo:1 is not on this node (and this node does not pull); " * 3
    view = job(message=REASONS, executions=[execution(long_error.strip(), "rejected")])
    print_job(view, width=80)
    out = capsys.readouterr().out
    assert all(len(line) <= 80 for line in out.splitlines()), out
    assert " ".join(words(REASONS)) in " ".join(words(out)), out
    assert " ".join(words(long_error)) in " ".join(words(out)), out


def test_a_pipe_gets_every_line_whole(capsys: pytest.CaptureFixture[str]) -> None:
    long_error = "x" * 30 + " is a very long error " + "y" * 90
    print_executions([execution(long_error)])  # stdout is not a terminal here, no COLUMNS
    assert long_error in capsys.readouterr().out


def test_columns_sets_the_width(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "70")
    print_job(job(message=REASONS))
    out = capsys.readouterr().out
    assert all(len(line) <= 70 for line in out.splitlines()), out


def test_a_compile_error_keeps_its_line_breaks(capsys: pytest.CaptureFixture[str]) -> None:
    print_executions([execution(COMPILE_ERROR)], width=200)
    lines = capsys.readouterr().out.splitlines()
    row = next(i for i, line in enumerate(lines) if "is not a valid" in line)
    column = lines[row].index("/app/bad.wasm")
    shown = [line[column:] for line in lines[row : row + 5]]
    assert shown == COMPILE_ERROR.splitlines(), lines
    # narrower: the prose wraps, the source excerpt and its caret stay whole and aligned
    print_executions([execution(COMPILE_ERROR)], width=100)
    out = capsys.readouterr().out
    assert "    1 | (module (func $f (unknown)))\n" in out, out
    assert "      |                   ^\n" in out, out


def test_a_service_shows_its_replicas_running_out_of_count(
    capsys: pytest.CaptureFixture[str],
) -> None:
    waiting = job("service", "Running", WAITING, count=2)
    assert shown_state(waiting) == "Running 0/2"
    assert state_line(waiting) == f"Running 0/2: {WAITING}"
    half = job("service", "Running", count=2, counts={"running": 1, "offered": 1})
    assert state_line(half) == "Running 1/2"
    assert shown_state(job("service", "Stopped", count=2)) == "Stopped"  # ended: bare
    assert shown_state(job("daemon", "Running", counts={"running": 1})) == "Running on 1 node"
    assert shown_state(job("batch", "Running", counts={"running": 1})) == "Running"
    print_job(waiting, width=200)
    assert f"State:     Running 0/2: {WAITING}\n" in capsys.readouterr().out
    print_jobs([waiting], width=200)
    assert "Running 0/2" in capsys.readouterr().out


def test_the_job_list_cuts_a_message_with_an_ellipsis(capsys: pytest.CaptureFixture[str]) -> None:
    print_jobs([job(message=REASONS)], width=100)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and len(lines[1]) == 100 and lines[1].endswith("…"), lines


def test_the_wait_lines_say_why_the_job_waits() -> None:
    view = job("service", "Running", WAITING, count=2, counts={"rejected": 2})
    line = status(view, 3.25, 60)
    assert line.startswith("Running 0/2  3.2s  2 rejected  waiting for nodes") and len(line) == 59
    assert line.endswith("…")
    said = still_waiting(view.id, 120, view)
    assert said == (
        f"Still not done after 120s (Running 0/2: {WAITING}); "
        f"follow it with: shoal job describe {view.id}"
    )
    assert "(" not in still_waiting(view.id, 120, None)


def test_a_table_wraps_its_last_column_under_itself(capsys: pytest.CaptureFixture[str]) -> None:
    text = "one two three four five six seven eight nine ten eleven twelve"
    print_table(["A", "MESSAGE"], [["x", text]], width=40)
    assert capsys.readouterr().out.splitlines() == [
        "A  MESSAGE",
        "x  one two three four five six seven",
        "   eight nine ten eleven twelve",
    ]
    # too little room beside the other columns: the long cell goes under its row
    print_table(["LONG COLUMN", "MESSAGE"], [["x", "short"], ["y", text]], width=40)
    assert capsys.readouterr().out.splitlines() == [
        "LONG COLUMN  MESSAGE",
        "x            short",
        "y",
        "    one two three four five six seven",
        "    eight nine ten eleven twelve",
    ]


def test_waiting_off_a_terminal_says_each_new_reason_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    shown = WaitDisplay()
    other = 'waiting for nodes: 2 nodes declined: "image web:2 is not on this node" (a, b)'
    views = [
        job("service", "Pending", count=2),  # nothing to say yet
        job("service", "Running", WAITING, count=2),
        job("service", "Running", WAITING, count=2, counts={"rejected": 2}),  # same words
        job("service", "Running", other, count=2),
        job("service", "Stopped", "enough", count=2),  # the end: `job run` says it
    ]
    for view in views:
        shown.show(view)
    shown.done()
    assert capsys.readouterr().err.splitlines() == [
        f"Job j-0123456789: Running 0/2: {WAITING}",
        f"Job j-0123456789: Running 0/2: {other}",
    ]
    assert shown.last is views[-1]
    quiet = WaitDisplay(enabled=False)  # --id-only: nothing said, the last view still kept
    quiet.show(views[1])
    assert capsys.readouterr().err == "" and quiet.last is views[1]


def test_waiting_on_a_terminal_rewrites_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    monkeypatch.setenv("COLUMNS", "50")
    shown = WaitDisplay()
    shown.show(job("service", "Running", WAITING, count=2))
    shown.done()
    err = capsys.readouterr().err
    assert re.match(r"\r\x1b\[KRunning 0/2  \d+\.\ds  waiting for nodes", err), err
    line = err.split("\r\x1b[K")[1]
    assert len(line) == 49 and line.endswith("…"), line
    assert err.endswith("\r\x1b[K")


def test_history_pages_line_up_under_the_first(capsys: pytest.CaptureFixture[str]) -> None:
    """`job history` prints each page as it arrives: a later page, whose states are shorter
    than the first page's, keeps the first page's columns."""

    def event(state: str, message: str) -> wire.JobEvent:
        return wire.JobEvent(
            job_id="j-1", at=0.0, kind="execution", message=message, state=state,
            execution_id="e-0123456789",
        )  # fmt: skip

    print_history([event("completed", "first page")])
    print_history([event("offered", "second page")], header=False)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("TIME") and len(lines) == 3
    assert (
        lines[1].index("first page") == lines[2].index("second page") == lines[0].index("MESSAGE")
    )
