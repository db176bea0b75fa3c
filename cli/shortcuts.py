"""`shoal wasm run` and `shoal docker run`: one-line jobs without writing a spec file."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import click

from cli.job import submit_and_wait
from cli.output import FORMATS, errors_to_exit
from shared.errors import InvalidSpec
from shared.spec import spec_from_data


def _common(f: Any) -> Any:
    for option in reversed(
        [
            click.option("--name", default="", help="Job name (default: the job id)."),
            click.option("-e", "--env", "env", multiple=True, metavar="KEY=VALUE"),
            click.option("--memory", default=None, help="Memory limit, e.g. 64Mb."),
            click.option("--cpu", default=None, help="CPU, e.g. 500m."),
            click.option("--timeout", type=float, default=0, help="ExecutionTimeout in seconds."),
            click.option(
                "-l",
                "--label",
                "constraints",
                multiple=True,
                metavar="KEY=VALUE",
                help="Only run on nodes with this label (repeatable).",
            ),
            click.option("--wait/--no-wait", default=True, show_default=True),
            click.option("--wait-timeout", type=float, default=600.0, show_default=True),
            click.option("--id-only", is_flag=True),
            click.option("-o", "--output", "fmt", type=FORMATS, default="table", show_default=True),
        ]
    ):
        f = option(f)
    return f


def _pairs(items: tuple[str, ...], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidSpec(f"{flag} {item!r}: expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def _task_extras(
    env: tuple[str, ...], memory: str | None, cpu: str | None, timeout: float
) -> dict[str, Any]:
    resources = {k: v for k, v in (("Memory", memory), ("CPU", cpu)) if v}
    return {
        "Env": _pairs(env, "-e"),
        "Resources": resources,
        "Timeouts": {"ExecutionTimeout": timeout},
    }


@click.group()
def wasm() -> None:
    """Run WebAssembly modules."""


@wasm.command("run", context_settings={"ignore_unknown_options": True})
@click.argument("module", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@_common
@click.pass_context
def wasm_run(
    ctx: click.Context,
    module: Path,
    args: tuple[str, ...],
    name: str,
    env: tuple[str, ...],
    memory: str | None,
    cpu: str | None,
    timeout: float,
    constraints: tuple[str, ...],
    wait: bool,
    wait_timeout: float,
    id_only: bool,
    fmt: str,
) -> None:
    """Run a local .wasm (or .wat) MODULE as a batch job; the module travels inline."""
    with errors_to_exit():
        data = module.read_bytes()
        if module.suffix == ".wat":
            from compute.engines.wasm import wat_to_wasm  # wasmtime only when needed

            data = wat_to_wasm(data.decode())
        target = f"/app/{module.stem}.wasm"
        url = "data:application/wasm;base64," + base64.b64encode(data).decode()
        spec = spec_from_data(
            {
                "Name": name,
                "Type": "batch",
                "Constraints": [
                    {"Key": k, "Operator": "=", "Values": [v]}
                    for k, v in _pairs(constraints, "-l").items()
                ],
                "Tasks": [
                    {
                        "Engine": {
                            "Type": "wasm",
                            "Params": {"EntryModule": target, "Parameters": list(args)},
                        },
                        "InputSources": [
                            {"Source": {"Type": "inline", "Params": {"URL": url}}, "Target": target}
                        ],
                        **_task_extras(env, memory, cpu, timeout),
                    }
                ],
            }
        )
    submit_and_wait(ctx, spec, wait=wait, wait_timeout=wait_timeout, id_only=id_only, fmt=fmt)
