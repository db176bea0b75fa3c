"""The HTTP side of a Shoal process: Prometheus text at /metrics, /healthz and /readyz probes.

`/healthz` answers 200 while the process runs and every NATS connection it watches is up, 503
otherwise (a liveness probe: restart me). `/readyz` answers 200 once the process says it is
ready (an orchestrator: its state mirror is loaded and its API serves; an agent: registered),
503 before (a readiness probe: send me no work yet). Both answer a line of plain text saying
why. The metrics are prometheus_client's default registry, in its text exposition format.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from shared.errors import ShoalError
from shared.lifecycle import Service

log = logging.getLogger(__name__)


class Connection(Protocol):
    """What the probes read of a NATS connection (shared/bus's Bus)."""

    @property
    def connected(self) -> bool: ...

    @property
    def reconnects(self) -> int: ...


class _Reconnects(Collector):
    """shoal_nats_reconnects_total: reconnections of the NATS connections this process's
    probes watch, summed."""

    def __init__(self) -> None:
        self.probes: weakref.WeakSet[Probes] = weakref.WeakSet()

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "shoal_nats_reconnects", "Times a NATS connection of this process was re-established"
        )
        buses = {id(bus): bus for probes in list(self.probes) for bus in probes.buses}
        family.add_metric([], sum(bus.reconnects for bus in buses.values()))
        yield family


RECONNECTS = _Reconnects()
REGISTRY.register(RECONNECTS)


class Probes(Service):
    """start() / idempotent stop() / `async with`: serves /metrics, /healthz and /readyz on
    `host`:`port` (port 0: any free one; `port` tells which once started).

    `buses`: the NATS connections /healthz checks (read at each request: a list the caller
    appends to later is seen)."""

    def __init__(
        self,
        *,
        host: str = "0.0.0.0",
        port: int = 0,
        buses: Sequence[Connection] = (),
        ready: Callable[[], bool] = lambda: True,
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self.host = host
        self.port = port
        self.buses = buses
        self._ready = ready
        self._registry = registry
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        if self._runner is not None:
            return
        RECONNECTS.probes.add(self)
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ShoalError(
                f"cannot serve metrics and probes on {self.host}:{self.port}: {exc.strerror}; "
                "choose another --metrics-port (0 turns them off)"
            ) from exc
        self._runner = runner
        if runner.addresses:  # the port chosen, when asked for any (0)
            self.port = int(runner.addresses[0][1])
        log.info("metrics and probes on http://%s:%d/metrics", self.host, self.port)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        RECONNECTS.probes.discard(self)
        if runner is not None:
            await runner.cleanup()

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    def healthy(self) -> tuple[bool, str]:
        down = sum(1 for bus in self.buses if not bus.connected)
        if down:
            return False, f"{down} of {len(self.buses)} NATS connection(s) down"
        return True, "ok"

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        ok, why = self.healthy()
        return web.Response(status=200 if ok else 503, text=why + "\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        ok, why = self.healthy()
        if ok and not self._ready():
            ok, why = False, "not ready"
        return web.Response(status=200 if ok else 503, text=("ready" if ok else why) + "\n")
