"""`shoal job run/get/list` with versions: run shows its own version, an unchanged resubmit says
what it did, `job get` says where it wrote, `job list` says what its limit left out."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.client import UnchangedSpecWarning
from shared.natsserver import EmbeddedNats
from tests.integration.helpers_jobs import noop_job, run_cli
from tests.integration.stack import stack


def _write(tmp_path: Path, name: str, spec: dict[str, Any]) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


async def test_run_prints_only_the_version_it_submitted(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    v1 = _write(tmp_path, "v1", noop_job("nightly", stdout="from v1\n"))
    v2 = _write(tmp_path, "v2", noop_job("nightly", stdout="from v2\n"))
    async with stack(nats_server.url, tmp_path):
        first = await run_cli("job", "run", str(v1), url=nats_server.url)
        assert first.code == 0 and first.stdout == "from v1\n", first
        second = await run_cli("job", "run", str(v2), url=nats_server.url)
        assert second.code == 0, second
        assert second.stdout == "from v2\n", second
        assert "(version 2)" in second.stderr, second


async def test_get_takes_a_version(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    async with stack(nats_server.url, tmp_path) as s, await s.client() as client:
        one = await client.run(noop_job("kept", stdout="from v1\n"), timeout=20)
        two = await client.run(noop_job("kept", stdout="from v2\n"), timeout=20)
        latest, first = await asyncio.gather(
            run_cli("job", "get", "kept", "--output-dir", str(tmp_path / "a"), url=nats_server.url),
            run_cli(
                "job",
                "get",
                "kept",
                "--version",
                "1",
                "--output-dir",
                str(tmp_path / "b"),
                url=nats_server.url,
            ),
        )
        assert latest.code == 0 and first.code == 0, (latest, first)
        (execution,) = two.executions
        assert (tmp_path / "a" / execution.id / "stdout").read_text() == "from v2\n"
        assert [p.name for p in (tmp_path / "a").iterdir()] == [execution.id]
        (execution,) = one.executions
        assert (tmp_path / "b" / execution.id / "stdout").read_text() == "from v1\n"
        assert [p.name for p in (tmp_path / "b").iterdir()] == [execution.id]


async def test_get_says_where_it_wrote(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    async with stack(nats_server.url, tmp_path) as s, await s.client() as client:
        view = await client.run(noop_job("fetched", stdout="hi\n"), timeout=20)
        here = tmp_path / "cwd"
        here.mkdir()
        done = await run_cli("job", "get", view.id, url=nats_server.url, cwd=here)
        assert done.code == 0, done
        where = here.resolve() / view.id
        assert (where / view.executions[0].id / "stdout").read_text() == "hi\n"
        assert f"to {where}/" in done.stderr, done
        assert "version 1" in done.stderr, done


async def test_unchanged_resubmit_of_a_failed_job_says_nothing_ran(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    failing = noop_job("flaky", exit_code=3, stdout="old attempt\n")
    spec = _write(tmp_path, "flaky", failing)
    async with stack(nats_server.url, tmp_path) as s, await s.client() as client:
        first = await run_cli("job", "run", str(spec), url=nats_server.url)
        assert first.code == 3 and "old attempt" in first.stdout, first

        again = await run_cli("job", "run", str(spec), url=nats_server.url)
        assert again.code == 3, again  # the job, as specified, has failed
        assert "old attempt" not in again.stdout, again  # the old run is not replayed
        assert "unchanged from version 1 (Failed)" in again.stderr, again
        assert "Nothing ran" in again.stderr, again
        assert "shoal job rerun" in again.stderr and "--force" in again.stderr, again
        assert (await client.describe("flaky")).version == 1

        forced = await run_cli("job", "run", str(spec), "--force", url=nats_server.url)
        assert "(version 2)" in forced.stderr and forced.stdout.count("old attempt") == 3, forced


async def test_unchanged_resubmit_of_a_running_job_waits_for_it(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    spec = _write(tmp_path, "slow", noop_job("slow", sleep=2, stdout="once\n"))
    async with stack(nats_server.url, tmp_path) as s, await s.client() as client:
        started = await run_cli("job", "run", str(spec), "--no-wait", url=nats_server.url)
        assert started.code == 0, started
        again = await run_cli("job", "run", str(spec), url=nats_server.url)
        assert again.code == 0, again
        assert again.stdout == "once\n", again
        assert "version 1" in again.stderr and "Waiting for" in again.stderr, again
        assert (await client.describe("slow")).version == 1


async def test_client_run_of_an_unchanged_spec_warns_and_can_force(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    spec = noop_job("flaky-py", exit_code=3)
    async with stack(nats_server.url, tmp_path) as s, await s.client() as client:
        first = await client.run(spec, timeout=30)
        assert first.state == "Failed" and first.version == 1
        with pytest.warns(UnchangedSpecWarning, match="force=True"):
            again = await client.run(spec, timeout=30)
        assert again.version == 1 and again.executions == first.executions
        forced = await client.run(spec, timeout=30, force=True)
        assert forced.version == 2 and forced.state == "Failed"
        assert not {e.id for e in forced.executions} & {e.id for e in first.executions}


async def test_list_says_when_its_limit_left_jobs_out(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with stack(nats_server.url, tmp_path, agents=1) as s, await s.client() as client:
        for i in range(3):
            await client.submit(noop_job(f"listed-{i}"))
        cut, whole, exact = await asyncio.gather(
            run_cli("job", "list", "--limit", "2", url=nats_server.url),
            run_cli("job", "list", "--all", url=nats_server.url),
            run_cli("job", "list", "--limit", "3", url=nats_server.url),
        )
        for done in (cut, whole, exact):
            assert done.code == 0, done
        assert [line.split()[1] for line in cut.stdout.splitlines()[1:]] == [
            "listed-2",
            "listed-1",
        ], cut
        assert "there are more" in cut.stderr and "--all" in cut.stderr, cut
        assert len(whole.stdout.splitlines()) == 4 and not whole.stderr, whole
        assert len(exact.stdout.splitlines()) == 4 and not exact.stderr, exact
