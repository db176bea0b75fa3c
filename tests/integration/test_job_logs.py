"""`shoal job logs`: --follow ends with the job, follows replacements, --prefix, --version."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import nats
import yaml

from shared import subjects
from shared.natsserver import EmbeddedNats
from tests.conftest import eventually, terminate
from tests.integration.helpers_jobs import (
    REPO,
    SHOAL,
    agent_running,
    consistently,
    crash_agent,
    noop_job,
    run_cli,
)
from tests.integration.stack import Stack, stack

# A label as `--prefix` writes it: partition and short execution id.
LABEL = re.compile(rb"^\[p(\d+) (e-[0-9a-f]{8})\] ")


def _write(tmp_path: Path, name: str, spec: dict[str, Any]) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


class Follow:
    """`shoal job logs --follow` running as a subprocess; its stdout read as it comes."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[bytes] = []
        self.stderr = b""
        self._reading = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None and self.proc.stderr is not None
        errors = asyncio.create_task(self.proc.stderr.read())
        while line := await self.proc.stdout.readline():
            self.lines.append(line)
        self.stderr = await errors

    async def ended(self, timeout: float = 30.0) -> int:
        """Its exit code; an AssertionError if it is still following after `timeout`."""
        try:
            async with asyncio.timeout(timeout):
                code = await self.proc.wait()
                await self._reading
        except TimeoutError:
            raise AssertionError(
                f"`job logs --follow` still running after {timeout}s; printed {self.lines}"
            ) from None
        return code


@asynccontextmanager
async def following(url: str, *args: str) -> AsyncIterator[Follow]:
    proc = await asyncio.create_subprocess_exec(
        str(SHOAL),
        "job",
        "logs",
        "--follow",
        *args,
        cwd=str(REPO),
        env={**os.environ, "SHOAL_NATS_URL": url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    follow = Follow(proc)
    try:
        # Following once its consumer on the log stream exists (the CLI takes a while to start).
        await eventually(lambda: _log_readers(url), timeout=30, what="`job logs --follow` reading")
        yield follow
    finally:
        await terminate(proc, grace=5)
        await asyncio.gather(follow._reading, return_exceptions=True)


async def _log_readers(url: str) -> int:
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().stream_info(subjects.LOGS_STREAM)
        return info.state.consumer_count
    finally:
        await nc.close()


async def _queued_then_run(s: Stack, url: str, spec: dict[str, Any], expect: str) -> Follow:
    """Submit with no node to run it (the job waits in the queue), follow its logs, then add
    the node: the follow was live all along the job's run."""
    async with await s.client() as client:
        job_id = await client.submit(spec)
        await eventually(
            lambda: _state_is(client, job_id, "Queued"), what="the job waiting for a node"
        )
        async with following(url, job_id) as follow:
            await s.add_agent("node-0")
            code = await follow.ended()
            assert code == 0, follow.stderr
            assert (await client.describe(job_id)).state == expect
            return follow


async def _state_is(client: Any, job_id: str, state: str) -> bool:
    return bool((await client.describe(job_id)).state == state)


def _queued(name: str, **kwargs: Any) -> dict[str, Any]:
    return noop_job(name, timeouts={"QueueTimeout": 120}, **kwargs)


async def test_follow_ends_when_the_job_completes(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with stack(nats_server.url, tmp_path, agents=0) as s:
        spec = _queued("follow-completes", sleep=0.5, stdout="working\n")
        follow = await _queued_then_run(s, nats_server.url, spec, "Completed")
        assert follow.lines == [b"working\n"], follow.lines


async def test_follow_ends_when_the_job_fails(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    async with stack(nats_server.url, tmp_path, agents=0) as s:
        spec = _queued("follow-fails", exit_code=3, stdout="trying\n")
        follow = await _queued_then_run(s, nats_server.url, spec, "Failed")
        assert follow.lines == [b"trying\n"] * 3, follow.lines  # each of the three attempts


async def test_follow_ends_when_the_job_is_stopped(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    spec = noop_job("follow-stopped", sleep="forever", stdout="serving\n")
    async with stack(nats_server.url, tmp_path, agents=1) as s, await s.client() as client:
        job_id = await client.submit(spec)
        await eventually(lambda: _state_is(client, job_id, "Running"), what="the job running")
        async with following(nats_server.url, job_id) as follow:
            await eventually(lambda: follow.lines, what="the job's output followed")
            await client.stop(job_id)
            assert await follow.ended() == 0, follow.stderr
        assert follow.lines == [b"serving\n"], follow.lines


async def test_follow_of_a_stopped_job_waits_until_its_node_lets_it_go(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    """A cancelled execution's record is written before its node stops the task, which ships
    its last output then: the follow ends only once the node no longer runs it."""
    spec = noop_job("follow-slow-stop", sleep="forever", stdout="serving\n")
    async with stack(nats_server.url, tmp_path, agents=1) as s, await s.client() as client:
        agent = s.agents["node-0"]
        cancel = agent._cancel

        def late(execution_id: str, reason: str) -> None:  # a node slow to stop the task
            asyncio.get_running_loop().call_later(2.0, cancel, execution_id, reason)

        agent._cancel = late  # type: ignore[method-assign]
        job_id = await client.submit(spec)
        await eventually(lambda: _state_is(client, job_id, "Running"), what="the job running")
        async with following(nats_server.url, job_id) as follow:
            await eventually(lambda: follow.lines, what="the job's output followed")
            await client.stop(job_id)
            await eventually(
                lambda: _state_is(client, job_id, "Stopped"), what="the job stored as Stopped"
            )
            await consistently(
                lambda: follow.proc.returncode is None or not agent_running(agent),
                duration=1.0,
                what="following while the node still runs the execution",
            )
            assert await follow.ended() == 0, follow.stderr
            assert not agent_running(agent)


async def test_follow_of_a_service_shows_its_replacement(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    spec = noop_job("follow-web", type="service", sleep="forever", stdout="replica up\n")
    async with stack(nats_server.url, tmp_path, agents=2) as s, await s.client() as client:
        job_id = await client.submit(spec)
        await eventually(lambda: _state_is(client, job_id, "Running"), what="the service running")
        first = (await client.describe(job_id)).executions[0]
        async with following(nats_server.url, job_id, "--prefix") as follow:
            await eventually(lambda: follow.lines, what="the first replica's output")
            await crash_agent(s, first.node_id)  # its node is lost: the replica is replaced
            await eventually(lambda: len(follow.lines) == 2, what="the replacement's output")
            await client.stop(job_id)
            assert await follow.ended() == 0, follow.stderr
        labels = [LABEL.match(line) for line in follow.lines]
        assert all(m is not None for m in labels), follow.lines
        ids = [m.group(2).decode() for m in labels if m]
        assert ids[0] == first.id[:10] and ids[1] != ids[0], follow.lines
        assert all(line.endswith(b"] replica up\n") for line in follow.lines), follow.lines


async def test_logs_prefix_by_default_with_several_executions(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    spec = noop_job("two-parts", count=2, stdout="part\n")
    async with stack(nats_server.url, tmp_path) as s, await s.client() as client:
        view = await client.run(spec, timeout=20)
        plain, prefixed = await asyncio.gather(
            run_cli("job", "logs", view.id, "--no-prefix", url=nats_server.url),
            run_cli("job", "logs", view.id, url=nats_server.url),
        )
        assert plain.stdout == "part\npart\n", plain
        labels = sorted(line[:4] for line in prefixed.stdout.splitlines())
        assert labels == ["[p0 ", "[p1 "], prefixed
        by_id = {e.id[:10]: e.partition for e in view.executions}
        for line in prefixed.stdout.splitlines():
            m = LABEL.match(line.encode())
            assert m is not None and by_id[m.group(2).decode()] == int(m.group(1)), prefixed


async def test_logs_show_one_version(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    async with stack(nats_server.url, tmp_path) as s, await s.client() as client:
        await client.run(noop_job("versioned", stdout="from v1\n"), timeout=20)
        await client.run(noop_job("versioned", stdout="from v2\n"), timeout=20)
        latest, first, second = await asyncio.gather(
            run_cli("job", "logs", "versioned", url=nats_server.url),
            run_cli("job", "logs", "versioned", "--version", "1", url=nats_server.url),
            run_cli("job", "logs", "versioned", "--version", "2", url=nats_server.url),
        )
        assert latest.stdout == "from v2\n", latest
        assert first.stdout == "from v1\n", first
        assert second.stdout == "from v2\n", second
        lines = [line.data async for line in client.logs("versioned", version=1)]
        assert lines == [b"from v1\n"]
