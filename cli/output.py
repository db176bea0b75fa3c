"""How the CLI prints: data on stdout (table, json or yaml), diagnostics on stderr, exit codes."""

from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal, NoReturn

import click
import msgspec

from shared.errors import ExecutionFailed, InvalidSpec, NotFound, ShoalError, Unavailable
from shared.spec import dump_yaml

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_INVALID = 2
EXIT_JOB_FAILED = 3
EXIT_WAIT_TIMEOUT = 4
EXIT_UNREACHABLE = 5

FORMATS = click.Choice(["table", "json", "yaml"])


def to_plain(value: Any) -> Any:
    """Wire structs and pydantic models to JSON-ready builtins."""
    if hasattr(value, "dump") and callable(value.dump):
        return value.dump()
    return json.loads(msgspec.json.encode(value))  # Raw fields (specs) are inlined


def emit(value: Any, fmt: str, table: Callable[[Any], None] | None = None) -> None:
    plain = to_plain(value)
    if fmt == "json":
        click.echo(json.dumps(plain, indent=2, sort_keys=False))
    elif fmt == "yaml" or table is None:
        click.echo(dump_yaml(plain).rstrip())
    else:
        table(value)


# The least room the last column of a table is wrapped into beside the others; with less, a
# long cell goes on lines of its own under its row, this far in.
MIN_LAST_COLUMN = 30
TABLE_INDENT = 4


def terminal_width() -> int | None:
    """The columns to fit output in: $COLUMNS, else the terminal's; None when stdout is not a
    terminal (a pipe gets every line whole, however long)."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    if sys.stdout.isatty():
        return shutil.get_terminal_size().columns
    return None


def wrap(text: str, width: int | None) -> list[str]:
    """`text` as lines of at most `width` (None: as it is), its own line breaks kept: a
    too-long line is broken at spaces (a word longer than `width` inside itself), except a line
    after the first that starts indented, laid out by whoever wrote it (a compiler's source
    excerpt with its caret), which is kept whole for the terminal to fold."""
    out: list[str] = []
    for i, line in enumerate(text.splitlines() or [""]):
        line = line.rstrip()
        if width is None or len(line) <= width or (i and line[:1].isspace()):
            out.append(line)
            continue
        out.extend(textwrap.wrap(line, width, break_on_hyphens=False) or [""])
    return out


def cut(text: str, width: int | None) -> str:
    """`text`'s first line, ending in "…" where anything was left out (more of the line, or
    further lines)."""
    lines = text.splitlines() or [""]
    first = lines[0].rstrip()
    more = len(lines) > 1
    if width is not None and len(first) + more > width:
        return first[: max(width - 1, 0)].rstrip() + "…"
    return first + " …" if more else first


def print_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    last: Literal["wrap", "cut"] = "wrap",
    width: int | None = None,
    header: bool = True,
    min_widths: Sequence[int] = (),
) -> None:
    """Columns padded to their widest cell. The last column (a message, an error) gets the
    room the terminal leaves: wrapped onto continuation lines under it, or with `last="cut"`
    one line ending in "…"; never cut silently. Where the other columns leave it less than
    MIN_LAST_COLUMN, a cell that does not fit goes on lines of its own under its row, indented
    by TABLE_INDENT. `width`: the terminal's unless given. `header=False` and `min_widths`
    print a table's later pages under its first."""
    if width is None:
        width = terminal_width()
    cells = [[str(h) for h in headers], *[["" if c is None else str(c) for c in r] for r in rows]]
    lead = [[c.replace("\n", " ") for c in row[:-1]] for row in cells]
    widths = [max(len(row[i]) for row in lead) for i in range(len(headers) - 1)]
    widths = [max(w, m) for w, m in zip(widths, [*min_widths, *[0] * len(widths)], strict=False)]
    if not header:
        cells, lead = cells[1:], lead[1:]
    indent = sum(widths) + 2 * len(widths)
    room = None if width is None else width - indent
    narrow = room is not None and room < MIN_LAST_COLUMN
    for row, first in zip(cells, lead, strict=True):
        prefix = "".join(c.ljust(w) + "  " for c, w in zip(first, widths, strict=True))
        text = row[-1]
        if last == "cut":
            click.echo((prefix + cut(text, room if not narrow else MIN_LAST_COLUMN)).rstrip())
        elif narrow and width is not None and (len(text) > (room or 0) or "\n" in text):
            click.echo(prefix.rstrip())
            for line in wrap(text, width - TABLE_INDENT):
                click.echo((" " * TABLE_INDENT + line).rstrip())
        else:
            lines = wrap(text, room)
            click.echo((prefix + lines[0]).rstrip())
            for line in lines[1:]:
                click.echo((" " * indent + line).rstrip())


def info(message: str) -> None:
    click.echo(message, err=True)


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


@contextmanager
def errors_to_exit() -> Iterator[None]:
    """Every ShoalError becomes a one-paragraph message and its exit code; never a traceback."""
    try:
        yield
    except InvalidSpec as exc:
        fail(str(exc), EXIT_INVALID)
    except Unavailable as exc:
        fail(str(exc), EXIT_UNREACHABLE)
    except NotFound as exc:
        fail(str(exc), EXIT_ERROR)
    except ExecutionFailed as exc:
        fail(str(exc), EXIT_JOB_FAILED)
    except ShoalError as exc:
        fail(str(exc), EXIT_ERROR)
    except OSError as exc:
        fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc), EXIT_ERROR)
