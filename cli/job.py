"""`shoal job …`: validate, run, describe, list, logs, executions, history, stop."""

from __future__ import annotations

import click

from cli.output import EXIT_OK, FORMATS, emit, errors_to_exit, info
from cli.specfile import load_spec_file

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
