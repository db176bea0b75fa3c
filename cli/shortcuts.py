"""`shoal wasm run` and `shoal docker run`: one-line jobs without writing a spec file."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import click

from cli.job import submit_and_wait
from cli.output import FORMATS, errors_to_exit, info
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
            # Before -o/--output, as every other command prints: kept for old scripts.
            click.option("--format", "legacy_fmt", type=FORMATS, default=None, hidden=True),
        ]
    ):
        f = option(f)
    return f


def _format(fmt: str, legacy: str | None) -> str:
    if legacy is None:
        return fmt
    info(f"note: --format is deprecated; use -o {legacy}")
    return legacy


def _formats_or_results(
    values: tuple[str, ...], legacy: str | None
) -> tuple[str, list[dict[str, str]]]:
    """`docker run -o`: an output format (table, json, yaml) like every command's `-o`, or a
    result path NAME:PATH like Bacalhau's `docker run -o`; a format has no colon."""
    formats = [v for v in values if v in FORMATS.choices]
    if len(set(formats)) > 1:
        raise InvalidSpec(f"-o {formats[0]} and -o {formats[-1]}: give one output format")
    results = []
    for item in values:
        if item in FORMATS.choices:
            continue
        rname, sep, path = item.partition(":")
        if not sep or not rname or not path:
            raise InvalidSpec(
                f"-o {item!r}: expected an output format (table, json or yaml) or a result "
                "path NAME:PATH, e.g. outputs:/outputs"
            )
        results.append({"Name": rname, "Path": path})
    return _format(formats[0] if formats else "table", legacy), results


def _complete_formats(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    return [f for f in FORMATS.choices if f.startswith(incomplete)]


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
@click.option(
    "-o",
    "--output",
    "fmt",
    type=FORMATS,
    default="table",
    show_default=True,
    help="How to print the finished job.",
)
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
    legacy_fmt: str | None,
) -> None:
    """Run a local .wasm (or .wat) MODULE as a batch job; the module travels inline.

    Arguments after MODULE go to the module; put them after `--` when one looks like an
    option of this command (`shoal wasm run m.wasm -- -o x`)."""
    with errors_to_exit():
        fmt = _format(fmt, legacy_fmt)
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


def _input_source(text: str) -> dict[str, Any]:
    """`-i SOURCE[:TARGET]` like Bacalhau: file:///dir, s3://bucket/key, ipfs://CID, http(s)://."""
    source, target = text, ""
    scheme, sep, rest = text.partition("://")
    if (sep and ":" in rest.rsplit("/", 1)[-1]) or (sep and rest.count(":/") == 1):
        head, _, tail = rest.rpartition(":")
        if tail.startswith("/"):
            source, target = f"{scheme}://{head}", tail
    scheme, _, rest = source.partition("://")
    if scheme == "file":
        src = {"Type": "localDirectory", "Params": {"SourcePath": "/" + rest.lstrip("/")}}
    elif scheme == "s3":
        bucket, _, key = rest.partition("/")
        src = {"Type": "s3", "Params": {"Bucket": bucket, "Key": key}}
    elif scheme == "ipfs":
        src = {"Type": "ipfs", "Params": {"CID": rest}}
    elif scheme in ("http", "https"):
        src = {"Type": "urlDownload", "Params": {"URL": source}}
    else:
        raise InvalidSpec(
            f"-i {text!r}: use file:///dir, s3://bucket/key, ipfs://CID or "
            "http(s)://url, optionally followed by :/target"
        )
    return {"Source": src, "Target": target or "/inputs"}


@click.group()
def docker() -> None:
    """Run containers."""


@docker.command("run", context_settings={"ignore_unknown_options": True})
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option(
    "-i",
    "--input",
    "inputs",
    multiple=True,
    metavar="SOURCE[:TARGET]",
    help="Input: file:///dir, s3://bucket/key, ipfs://CID, https://url (+ :/target).",
)
@click.option(
    "-o",
    "--output",
    "outputs",
    multiple=True,
    metavar="FORMAT|NAME:PATH",
    shell_complete=_complete_formats,
    help="table, json or yaml: how to print the finished job (default: table). NAME:PATH: "
    "a result path to publish (repeatable), e.g. outputs:/outputs.",
)
@click.option(
    "-p",
    "--publisher",
    default="",
    help="nats, local, s3, ipfs or noop. Default: nats with --output, else none (no archive).",
)
@click.option(
    "--network",
    default="None",
    show_default=True,
    help="None, Full, Host, Bridge or HTTP (with --domain).",
)
@click.option("--domain", "domains", multiple=True, help="Allowed domain for --network HTTP.")
@click.option("--entrypoint", default=None, help="Override the image's entrypoint.")
@click.option("-w", "--workdir", default="", help="Working directory in the container.")
@_common
@click.pass_context
def docker_run(
    ctx: click.Context,
    image: str,
    command: tuple[str, ...],
    inputs: tuple[str, ...],
    outputs: tuple[str, ...],
    publisher: str,
    network: str,
    domains: tuple[str, ...],
    entrypoint: str | None,
    workdir: str,
    name: str,
    env: tuple[str, ...],
    memory: str | None,
    cpu: str | None,
    timeout: float,
    constraints: tuple[str, ...],
    wait: bool,
    wait_timeout: float,
    id_only: bool,
    legacy_fmt: str | None,
) -> None:
    """Run IMAGE [COMMAND...] as a batch job (like `bacalhau docker run`).

    Put COMMAND after `--` when it has options of its own (`shoal docker run alpine -- ls
    -l`): before it, this command's options (-l, -o, --nats...) are taken as Shoal's."""
    with errors_to_exit():
        fmt, results = _formats_or_results(outputs, legacy_fmt)
        params: dict[str, Any] = {
            "Image": image,
            "Parameters": list(command),
            "WorkingDirectory": workdir,
        }
        if entrypoint:
            params["Entrypoint"] = [entrypoint]
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
                        "Engine": {"Type": "docker", "Params": params},
                        "Publisher": {"Type": publisher},
                        "InputSources": [_input_source(i) for i in inputs],
                        "ResultPaths": results,
                        "Network": {"Type": network, "Domains": list(domains)},
                        **_task_extras(env, memory, cpu, timeout),
                    }
                ],
            }
        )
    submit_and_wait(ctx, spec, wait=wait, wait_timeout=wait_timeout, id_only=id_only, fmt=fmt)
