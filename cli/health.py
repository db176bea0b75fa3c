"""`shoal health PATH`: checks the status file a running orchestrator or agent keeps fresh.

`shoal orchestrator|compute --health-file PATH` rewrites PATH every few seconds (see
cli/services.py); this module owns that file's format, its atomic write, and the check the
Kubernetes probes run. It imports only the standard library and click, so a probe costs a
Python start-up and nothing more (no nats, no pydantic).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

WRITE_EVERY = 5.0  # seconds between writes; `--max-age` must leave room for a few of them
DEFAULT_MAX_AGE = 30.0


@dataclass(frozen=True, slots=True)
class Health:
    """One status record, as written to the health file (JSON object, extra keys ignored)."""

    role: str  # "orchestrator" or "compute"
    name: str  # the orchestrator's lease name, or the compute --name as given
    pid: int
    time: float  # unix time of the write
    ok: bool  # the process can do its work: today, its NATS connection is up
    nats_connected: bool
    reason: str = ""  # why not ok
    disconnected_since: float | None = None  # unix time the writer first saw NATS down
    # orchestrator
    leading: bool | None = None
    nodes: int | None = None
    jobs: int | None = None
    # compute
    node_id: str | None = None
    registered: bool | None = None
    approval: str | None = None
    running: int | None = None


class HealthFileError(Exception):
    """The health file is missing or unreadable; the message says which and what to do."""


_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "role": str,
    "name": str,
    "pid": int,
    "time": (int, float),
    "ok": bool,
    "nats_connected": bool,
}


def write(path: Path, health: Health) -> None:
    """Atomically: a reader sees the previous record or this one, never half of either."""
    data = json.dumps(dataclasses.asdict(health), separators=(",", ":")) + "\n"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(data)
    os.replace(tmp, path)


def read(path: Path) -> Health:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise HealthFileError(
            f"no health file at {path} (is the process running with --health-file?)"
        ) from None
    except OSError as exc:
        raise HealthFileError(f"cannot read the health file {path}: {exc.strerror}") from None
    try:
        raw: Any = json.loads(text)
    except ValueError as exc:
        raise HealthFileError(f"the health file {path} is not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise HealthFileError(f"the health file {path} does not hold a JSON object")
    for key, kind in _REQUIRED.items():
        value = raw.get(key)
        # bool is an int: a pid or time of `true` is as wrong as a missing one
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise HealthFileError(f"the health file {path} has no valid {key!r}")
    known = {f.name for f in dataclasses.fields(Health)}
    return Health(**{k: v for k, v in raw.items() if k in known})


def problem(
    health: Health, now: float, max_age: float, max_disconnected: float = 0.0
) -> str | None:
    """Why `health` does not pass, or None when it does. A NATS disconnection shorter than
    `max_disconnected` passes (liveness: restarting cannot bring NATS back)."""
    age = now - health.time
    if age > max_age:
        return f"last written {age:.0f} s ago (max {max_age:g} s): the process is stuck or gone"
    if not health.nats_connected:
        if health.disconnected_since is None:
            return "NATS disconnected"
        down = max(now - health.disconnected_since, 0.0)
        if down >= max_disconnected:
            limit = f" (max {max_disconnected:g} s)" if max_disconnected else ""
            return f"NATS disconnected for {down:.0f} s{limit}"
        return None
    if not health.ok:
        return health.reason or "the process reports not ok"
    return None


def summary(health: Health, now: float) -> str:
    """One line: who, what it is doing, how fresh the record is."""
    who = f"{health.role} {health.name}"
    parts: list[str] = []
    if health.role == "orchestrator":
        if health.leading is not None:
            parts.append("leader" if health.leading else "follower")
        if health.nodes is not None and health.jobs is not None:
            parts.append(f"{health.nodes} nodes, {health.jobs} jobs")
    elif health.role == "compute":
        if health.node_id is not None and health.node_id != health.name:
            who += f" (node {health.node_id})"
        if health.registered is not None:
            parts.append(
                f"registered {health.approval or ''}".rstrip()
                if health.registered
                else "not registered yet"
            )
        if health.running is not None:
            parts.append(f"{health.running} running")
    parts.append("NATS " + ("connected" if health.nats_connected else "disconnected"))
    parts.append(f"written {max(now - health.time, 0):.0f} s ago")
    return f"{who} (pid {health.pid}): {', '.join(parts)}"


@click.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--max-age",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_MAX_AGE,
    show_default=True,
    metavar="SECONDS",
    help="Fail when the file was last written longer ago than this.",
)
@click.option(
    "--max-disconnected",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    metavar="SECONDS",
    help="Pass while NATS has been disconnected for less than this (0: fail at once).",
)
def health(path: Path, max_age: float, max_disconnected: float) -> None:
    """Exit 0 if the process writing PATH (--health-file) is alive and connected, else 1.

    For exec probes: `shoal health /tmp/shoal-health`. It reads only the file, so it needs
    no credentials and checks this very process, not whichever replica answers the API.
    """
    now = time.time()
    try:
        record = read(path)
    except HealthFileError as exc:
        click.echo(f"unhealthy: {exc}", err=True)
        sys.exit(1)
    why = problem(record, now, max_age, max_disconnected)
    if why is not None:
        click.echo(f"unhealthy: {record.role} {record.name} (pid {record.pid}): {why}", err=True)
        sys.exit(1)
    click.echo(f"ok: {summary(record, now)}")
