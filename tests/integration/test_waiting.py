"""One way to wait for a job: `ShoalClient.wait`, `ShoalClient.run` and `shoal job run` all end
on the job's stored state (`shoal.v1.ns.<ns>.state.<job-id>.>`), never on its history events."""

from __future__ import annotations

import asyncio
import itertools
import os
import pty
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.history import History
from shared import subjects, wire
from shared.bus import Inbox
from shared.client import ShoalClient
from shared.natsserver import EmbeddedNats
from tests.conftest import eventually
from tests.integration.helpers_jobs import SHOAL, noop_job, run_cli
from tests.integration.stack import stack

SLOW = {"Type": "batch", "Tasks": [{"Engine": {"Type": "noop", "Params": {"Sleep": 0.3}}}]}


@pytest.fixture
def no_events(monkeypatch: pytest.MonkeyPatch) -> None:
    """The orchestrators publish no history event: only the stored state says what happens.
    (A client waiting on events would wait out the 2 s after which it asks the API.)"""

    async def dropped(self: History, namespace: str, event: wire.JobEvent) -> None:
        return None

    monkeypatch.setattr(History, "_append", dropped)


def refuse_events(client: ShoalClient) -> None:
    """The client may not subscribe to history events (as if its permissions said so)."""
    subscribe = client.bus.subscription

    async def subscription(subject: str) -> Inbox:
        if subject.startswith(subjects.events("default", "")):
            raise AssertionError(f"subscribed to {subject}")
        return await subscribe(subject)

    client.bus.subscription = subscription  # type: ignore[method-assign]


async def test_run_and_wait_end_on_the_stored_state(
    nats_server: EmbeddedNats, tmp_path: Path, no_events: None
) -> None:
    async with stack(nats_server.url, tmp_path) as s, await s.client() as client:
        refuse_events(client)
        ran = await client.run({**SLOW, "Count": 2}, timeout=20)
        assert ran.state == "Completed" and ran.execution_counts == {"completed": 2}, ran

        job_id = await client.submit(SLOW)
        await eventually(
            lambda: sum(a.running_count for a in s.agents.values()) == 1, what="the task running"
        )
        # Under the 2 s after which a silent wait asks the API: the records end it.
        waited = await client.wait(job_id, timeout=1.9)
        assert waited.state == "Completed", waited
        assert waited == await client.describe(job_id)


async def test_wait_shows_each_change_and_stops_at_until(
    nats_server: EmbeddedNats, tmp_path: Path, no_events: None
) -> None:
    async with stack(nats_server.url, tmp_path) as s, await s.client() as client:
        refuse_events(client)
        seen: list[wire.JobView] = []
        job_id = await client.submit(noop_job("shown", count=2, sleep=1))
        view = await client.wait(job_id, timeout=20, on_change=seen.append)
        assert view.state == "Completed" and seen[-1] == view, seen
        assert seen[0].state in ("Pending", "Running"), seen
        assert {"running": 2} in [v.execution_counts for v in seen], seen
        # Each view shown differs from the one before in state, message or counts.
        shown = [(v.state, v.state_message, v.execution_counts) for v in seen]
        assert all(a != b for a, b in itertools.pairwise(shown)), shown

        service = noop_job("placed", type="service", count=2, sleep=60)

        def placed(v: wire.JobView) -> bool:
            return v.execution_counts.get("running", 0) == 2

        service_id = await client.submit(service)
        view = await client.wait(service_id, timeout=20, until=placed)
        assert view.state == "Running" and placed(view), view

        # A wait for what will not happen still ends with the job.
        never = asyncio.create_task(client.wait(service_id, timeout=20, until=lambda v: False))
        await asyncio.sleep(0)  # let it subscribe
        await client.stop(service_id)
        view = await never
        assert view.state == "Stopped", view


def _spec(tmp_path: Path, name: str, spec: dict[str, Any]) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


async def test_cli_run_ends_on_the_stored_state(
    nats_server: EmbeddedNats, tmp_path: Path, no_events: None
) -> None:
    spec = _spec(tmp_path, "quick", noop_job("cli-quick", sleep=0.3, stdout="done here\n"))
    async with stack(nats_server.url, tmp_path):
        done = await run_cli("job", "run", str(spec), "--wait-timeout", "1.9", url=nats_server.url)
        assert done.code == 0, done
        assert "done here" in done.stdout, done
        assert re.search(r"Job j-\S+ Completed", done.stderr), done


async def test_cli_status_line_on_a_terminal(
    nats_server: EmbeddedNats, tmp_path: Path, no_events: None
) -> None:
    """On a terminal, `job run` rewrites one status line: state, time, executions by state."""
    spec = _spec(tmp_path, "status", noop_job("cli-status", count=2, sleep=1))
    async with stack(nats_server.url, tmp_path):
        code, stderr = await _run_cli_on_tty("job", "run", str(spec), url=nats_server.url)
    assert code == 0, stderr
    assert re.search(r"\r\x1b\[KRunning +\d+\.\ds  2 running", stderr), stderr
    assert re.search(r"Job j-\S+ Completed", stderr), stderr


async def _run_cli_on_tty(*args: str, url: str) -> tuple[int, str]:
    """`shoal` with its stderr on a pseudo-terminal; its exit code and what it wrote there."""
    master, slave = pty.openpty()
    try:
        proc = await asyncio.create_subprocess_exec(
            str(SHOAL),
            *args,
            env={**os.environ, "SHOAL_NATS_URL": url},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=slave,
        )
    finally:
        os.close(slave)
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the command has closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    try:
        async with asyncio.timeout(60):
            await asyncio.gather(asyncio.to_thread(read), proc.wait())
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        os.close(master)
    assert proc.returncode is not None
    return proc.returncode, b"".join(chunks).decode(errors="replace")
