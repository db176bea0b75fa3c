"""How the CLI prints: data on stdout (table, json or yaml), diagnostics on stderr, exit codes."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

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


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(h) for h in headers], *[["" if c is None else str(c) for c in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


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
