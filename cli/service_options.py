"""What the long-running commands share: logging, signals, their options, and the probes
they serve while they run."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar, cast

import click

from cli.common import duration, size
from cli.output import info
from orchestrator import metrics as orchestrator_metrics
from orchestrator.api import MAX_COUNT
from orchestrator.service import Orchestrator
from shared.bus import Bus
from shared.probes import Probes

F = TypeVar("F", bound=Callable[..., Any])


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("nats").setLevel(logging.WARNING)


async def until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


orchestrator_options = [
    click.option(
        "--heartbeat-interval",
        type=float,
        default=1.0,
        show_default=True,
        help="Seconds between node heartbeats (told to every agent).",
    ),
    click.option(
        "--disconnect-timeout",
        type=float,
        default=5.0,
        show_default=True,
        help="A node silent this long is lost and its work replaced.",
    ),
    click.option(
        "--manual-approval", is_flag=True, help="New nodes stay PENDING until `shoal node approve`."
    ),
    click.option(
        "--node-gc-after",
        default="24h",
        show_default=True,
        callback=duration,
        metavar="DURATION",
        help="Remove nodes DISCONNECTED this long (24h, 90m; 0: never); one that comes back "
        "registers again.",
    ),
    click.option(
        "--max-count",
        type=click.IntRange(min=1),
        default=MAX_COUNT,
        show_default=True,
        envvar="SHOAL_MAX_COUNT",
        help="Refuse jobs whose Count (partitions or replicas) is above this, at submit.",
    ),
    click.option(
        "--job-retention",
        default="168h",
        show_default=True,
        callback=duration,
        metavar="DURATION",
        envvar="SHOAL_JOB_RETENTION",
        help="Purge a job that ended (Completed, Failed, Stopped; never a daemon or service job) "
        "with its executions, versions, history, logs and results this long after it ended "
        "(168h, 30m; 0: keep everything).",
    ),
    click.option(
        "--logs-max-bytes",
        default="1Gi",
        show_default=True,
        callback=size,
        metavar="SIZE",
        envvar="SHOAL_LOGS_MAX_BYTES",
        help="Size limit of the SHOAL_LOGS stream; past it the oldest lines go first (0: none).",
    ),
    click.option(
        "--results-max-bytes",
        default="1Gi",
        show_default=True,
        callback=size,
        metavar="SIZE",
        envvar="SHOAL_RESULTS_MAX_BYTES",
        help="Size limit of each namespace's results object store; past it the oldest archives "
        "go first (0: none).",
    ),
]


metrics_options = [
    click.option(
        "--metrics-port",
        type=click.IntRange(0, 65535),
        default=0,
        show_default=True,
        envvar="SHOAL_METRICS_PORT",
        metavar="PORT",
        help="Serve Prometheus metrics at /metrics and the probes /healthz and /readyz on this "
        "HTTP port (0: off).",
    ),
    click.option(
        "--metrics-host",
        default="0.0.0.0",
        show_default=True,
        envvar="SHOAL_METRICS_HOST",
        metavar="HOST",
        help="The address --metrics-port listens on (127.0.0.1: this host only).",
    ),
]


class Ready:
    """What /readyz asks: False until the process says otherwise (`check`)."""

    def __init__(self) -> None:
        self.check: Callable[[], bool] = lambda: False

    def __call__(self) -> bool:
        return self.check()


@contextlib.asynccontextmanager
async def probes(
    port: int, host: str, buses: Sequence[Bus], ready: Callable[[], bool]
) -> AsyncIterator[None]:
    """/metrics, /healthz and /readyz on `host`:`port` while the block runs (port 0: none)."""
    if not port:
        yield
        return
    async with Probes(host=host, port=port, buses=buses, ready=ready) as probes:
        info(f"metrics and probes on {probes.url}/metrics, /healthz, /readyz")
        yield


@contextlib.asynccontextmanager
async def serving(orch: Orchestrator, ready: Ready) -> AsyncIterator[None]:
    """The started orchestrator's gauges served and /readyz 200 while the block runs."""
    forget = orchestrator_metrics.observe(orch)
    ready.check = lambda: True
    try:
        yield
    finally:
        ready.check = lambda: False
        forget()


def with_options(options: list[Callable[[F], F]]) -> Callable[[F], F]:
    def apply(f: F) -> F:
        for option in reversed(options):
            f = option(f)
        return f

    return apply


# The orchestrator options (`orchestrator_options`) by their OrchestratorConfig field names.
_SETTINGS = (
    "heartbeat_interval",
    "disconnect_timeout",
    "manual_approval",
    "node_gc_after",
    "max_count",
    "job_retention",
    "logs_max_bytes",
    "results_max_bytes",
)


def orchestrator_settings(f: F) -> F:
    """The orchestrator options on a command, handed to it as one `settings` mapping of
    OrchestratorConfig fields (a size limit of 0: none)."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        settings = {name: kwargs.pop(name) for name in _SETTINGS}
        for name in ("logs_max_bytes", "results_max_bytes"):
            settings[name] = settings[name] or None
        return f(*args, settings=settings, **kwargs)

    return with_options(orchestrator_options)(cast(F, wrapper))
