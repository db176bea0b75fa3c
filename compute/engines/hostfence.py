"""Host firewall rules that keep tasks on the HTTP network away from this machine's services.

An internal docker network has no route out, but its gateway is an address of this host, so
anything listening on 0.0.0.0 here (NATS, the Docker API on TCP, a database) would answer a
task. The fence drops everything arriving from that network's bridge except the port of the
run's own proxy: one DROP rule per bridge, one ACCEPT rule per running proxy, in INPUT.
"""

from __future__ import annotations

import asyncio
import logging
import shutil

from shared.errors import ExecutionFailed

log = logging.getLogger(__name__)


class HostFence:
    def __init__(self, iptables: str = "iptables") -> None:
        self._iptables = iptables
        self._lock = asyncio.Lock()

    async def open(self, bridge: str, port: int) -> None:
        """Drop the bridge's traffic to this host, except TCP to `port` (a running proxy)."""
        async with self._lock:  # rules of one host: one change at a time from this agent
            drop = ["INPUT", "-i", bridge, "-j", "DROP"]
            if not await self._run("-C", *drop, check=False):
                await self._run("-A", *drop)
            await self._run("-I", *self._accept(bridge, port))

    async def close(self, bridge: str, port: int) -> None:
        async with self._lock:
            if not await self._run("-D", *self._accept(bridge, port), check=False):
                log.warning("fence rule for %s port %d was already gone", bridge, port)

    @staticmethod
    def _accept(bridge: str, port: int) -> list[str]:
        return ["INPUT", "-i", bridge, "-p", "tcp", "--dport", str(port), "-j", "ACCEPT"]

    async def _run(self, *args: str, check: bool = True) -> bool:
        binary = shutil.which(self._iptables)
        if binary is None:
            raise ExecutionFailed(
                f"network type HTTP needs {self._iptables} to keep tasks off this host's "
                "services, and it is not installed here",
                retryable=False,
            )
        proc = await asyncio.create_subprocess_exec(
            binary,
            "-w",  # wait for the xtables lock rather than fail when dockerd holds it
            *args,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate()
        if proc.returncode == 0:
            return True
        if check:
            raise ExecutionFailed(
                f"cannot fence the HTTP network off this host ({self._iptables} "
                f"{' '.join(args)}: {err.decode(errors='replace').strip()})",
                retryable=False,
            )
        return False
