"""The Celery peer: the latency and throughput loads through Celery on a local Redis."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from bench.procs import BIN, Child, free_port, mib
from bench.report import summary_ms

WARMUP = 5


def available() -> str | None:
    """None if the peer can run here, else why not."""
    try:
        import celery  # type: ignore[import-untyped]  # noqa: F401
        import redis  # noqa: F401
    except ImportError:
        return "celery[redis] is not installed (pip install -e '.[bench]')"
    if _redis_server() is None:
        return "redis-server is not installed (apt-get install redis-server)"
    return None


def _redis_server() -> str | None:
    found = shutil.which("redis-server")
    if found is None and Path("/usr/bin/redis-server").exists():
        found = "/usr/bin/redis-server"
    return found


def _wait_redis(url: str, child: Child, timeout: float = 15.0) -> None:
    import redis

    deadline = time.monotonic() + timeout
    client = redis.Redis.from_url(url)
    while True:
        child.check()
        try:
            client.ping()
            return
        except redis.exceptions.ConnectionError:
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start:\n" + child.tail()) from None
            time.sleep(0.05)
        finally:
            client.close()


class CeleryPeer:
    """redis-server and a Celery worker (threads pool), started and stopped together."""

    def __init__(self, workdir: Path, concurrency: int = 8) -> None:
        self.workdir = workdir
        self.concurrency = concurrency
        self.redis: Child | None = None
        self.worker: Child | None = None
        self.app: Any = None

    def start(self) -> None:
        redis_server = _redis_server()
        assert redis_server is not None, available()
        logs = self.workdir / "logs"
        port = free_port()
        url = f"redis://127.0.0.1:{port}/0"
        self.redis = Child(
            "redis",
            [
                redis_server,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            logs,
        )
        _wait_redis(url, self.redis)
        self.worker = Child(
            "celery-worker",
            [
                str(BIN / "celery"),
                "-A",
                "bench.celery_peer.app",
                "worker",
                "--pool",
                "threads",
                "--concurrency",
                str(self.concurrency),
                "--loglevel",
                "WARNING",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            logs,
            env={"BENCH_REDIS_URL": url},
        )
        # A client app of its own: Celery caches its broker pool and result backend on first
        # use, so an app once pointed at an earlier peer's Redis would keep using that one.
        from celery import Celery  # type: ignore[import-untyped]

        from bench.celery_peer.app import app

        self.app = Celery("bench-client", broker=url, backend=url)
        self.app.conf.update(app.conf.table(with_defaults=False))
        self.app.conf.update(broker_url=url, result_backend=url)
        deadline = time.monotonic() + 60
        while True:  # the worker is up once it answers
            self.worker.check()
            try:
                self._noop().get(timeout=2)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        "the celery worker did not answer:\n" + self.worker.tail()
                    ) from None
                continue
        for _ in range(WARMUP):
            self._noop().get(timeout=30)

    def _noop(self) -> Any:
        """Send the peer worker's trivial task (`delay()` does the same by name)."""
        return self.app.send_task("bench.noop")

    def stop(self) -> None:
        if self.app is not None:
            self.app.close()
        if self.worker is not None:
            self.worker.stop_sync()
        if self.redis is not None:
            self.redis.stop_sync()

    def __enter__(self) -> CeleryPeer:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def latency(self, n: int) -> list[float]:
        """Seconds of each of `n` sequential `delay().get()`."""
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            self._noop().get(timeout=30)
            samples.append(time.perf_counter() - t0)
        return samples

    def throughput(self, n: int) -> dict[str, Any]:
        assert self.worker is not None and self.redis is not None
        w0, r0 = self.worker.usage(), self.redis.usage()
        t0 = time.perf_counter()
        pending = [self._noop() for _ in range(n)]
        t_sent = time.perf_counter()
        for result in pending:
            result.get(timeout=max(60.0, n * 0.1))
        elapsed = time.perf_counter() - t0
        w1, r1 = self.worker.usage(), self.redis.usage()
        return {
            "n": n,
            "seconds": round(elapsed, 3),
            "tasks_per_s": round(n / elapsed, 1),
            "sends_per_s": round(n / (t_sent - t0), 1),
            "worker_cpu_s": round(w1.cpu - w0.cpu, 3),
            "worker_peak_rss_mib": mib(w1.hwm),
            "redis_cpu_s": round(r1.cpu - r0.cpu, 3),
        }


def run(workdir: Path, n_latency: int, n_throughput: int, concurrency: int = 8) -> dict[str, Any]:
    """Start redis-server and a Celery worker, run both loads, stop them; the figures."""
    with CeleryPeer(workdir, concurrency) as peer:
        samples = peer.latency(n_latency)
        throughput = peer.throughput(n_throughput)
    return {
        "worker": f"--pool threads --concurrency {concurrency}",
        "latency": {"n": n_latency, "delay_to_get": summary_ms(samples)},
        "throughput": throughput,
    }
