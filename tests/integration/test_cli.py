"""The `shoal` command as a subprocess against an in-process stack on a real nats-server.

The stack runs in the test's event loop; the CLI runs with asyncio.create_subprocess_exec so
the loop keeps serving while the command waits.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import yaml

from shared.natsserver import EmbeddedNats
from tests.integration.helpers_jobs import EXAMPLES, free_port, noop_job, run_cli
from tests.integration.stack import stack


def _write(tmp_path: Path, name: str, spec: dict[str, object]) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


async def test_cli_runs_hello_wasm(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    async with stack(nats_server.url, tmp_path):
        done = await run_cli("job", "run", str(EXAMPLES / "hello-wasm.yaml"), url=nats_server.url)
        assert done.code == 0, done
        assert "Hello from Shoal on WebAssembly!" in done.stdout, done
        assert "Completed" in done.stderr, done  # progress and diagnostics on stderr


async def test_cli_failing_job_exits_3(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    async with stack(nats_server.url, tmp_path):
        done = await run_cli("job", "run", str(EXAMPLES / "failing-job.yaml"), url=nats_server.url)
        assert done.code == 3, done
        assert "Failed" in done.stderr, done
        assert "something went wrong" in done.stderr, done  # the task's own stderr


async def test_cli_wait_timeout_exits_4(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    spec = _write(tmp_path, "slow", noop_job("cli-slow", sleep=30))
    async with stack(nats_server.url, tmp_path):
        done = await run_cli(
            "job", "run", str(spec), "--wait-timeout", "0.5", "--id-only", url=nats_server.url
        )
        assert done.code == 4, done
        job_id = done.stdout.strip()
        assert job_id.startswith("j-"), done
        stopped = await run_cli("job", "stop", job_id, url=nats_server.url)
        assert stopped.code == 0, stopped
        again = await run_cli("job", "stop", job_id[:10], url=nats_server.url)
        assert again.code == 0, again
        assert "already ended" in again.stderr, again


async def test_cli_unreachable_nats_exits_5(tmp_path: Path) -> None:
    dead = f"nats://127.0.0.1:{free_port()}"
    # What starting the command costs on this machine (imports), to time only the failing part.
    baseline = await run_cli("--help", url=dead, timeout=30)
    assert baseline.code == 0, baseline
    for args in (
        ("job", "run", str(EXAMPLES / "hello-wasm.yaml")),
        ("--nats", "nats://127.0.0.1:1", "node", "list"),
    ):
        done = await run_cli(*args, url=dead, timeout=30)
        assert done.code == 5, done
        assert "Traceback" not in done.stderr, done
        assert "NATS" in done.stderr, done
        # "under ~5 s" on an idle machine; beyond start-up, the failure itself must be quick
        assert done.elapsed < 5 or done.elapsed - baseline.elapsed < 3, (done, baseline)


async def test_cli_invalid_spec_and_unknown_job(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("Type: batch\nTasks:\n  - Engine: {Type: noop}\n    Resources: {Memory: 1Zb}\n")
    async with stack(nats_server.url, tmp_path, agents=1):
        done, unknown = await asyncio.gather(
            run_cli("job", "run", str(bad), url=nats_server.url),
            run_cli("job", "describe", "j-does-not-exist", url=nats_server.url),
        )
        assert done.code == 2, done
        assert "Memory" in done.stderr and "Traceback" not in done.stderr, done
        done = unknown
        assert done.code == 1, done
        assert "j-does-not-exist" in done.stderr, done


async def test_cli_describe_history_and_logs(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    spec = _write(tmp_path, "two", noop_job("cli-two", count=2, stdout="line from noop\n"))
    url = nats_server.url
    async with stack(nats_server.url, tmp_path):
        done = await run_cli("job", "run", str(spec), "--id-only", url=nats_server.url)
        assert done.code == 0, done
        job_id = done.stdout.strip()

        # Read-only commands, run side by side (each CLI start costs seconds).
        described, table, history, history_table, logs, listed = await asyncio.gather(
            run_cli("job", "describe", job_id, "-o", "json", url=nats_server.url),
            run_cli("job", "describe", job_id[:10], url=nats_server.url),
            run_cli("job", "history", job_id, "-o", "json", url=nats_server.url),
            run_cli("job", "history", job_id, url=nats_server.url),
            run_cli("job", "logs", job_id, url=nats_server.url),
            run_cli("job", "list", "-o", "json", url=nats_server.url),
        )

        assert described.code == 0, described
        view = json.loads(described.stdout)
        for key in ("ID", "Name", "Namespace", "Type", "State", "StateMessage", "Version"):
            assert key in view, (key, view)
        assert view["ID"] == job_id and view["Name"] == "cli-two" and view["State"] == "Completed"
        assert len(view["Executions"]) == 2
        for e in view["Executions"]:
            for key in (
                "ID",
                "NodeID",
                "Partition",
                "DesiredState",
                "ComputeState",
                "ExitCode",
                "Error",
            ):
                assert key in e, (key, e)
            assert e["ComputeState"] == "completed" and e["ExitCode"] == 0
        assert sorted(e["Partition"] for e in view["Executions"]) == [0, 1]

        assert table.code == 0, table
        assert job_id in table.stdout and "Completed" in table.stdout, table

        assert history.code == 0, history
        events = json.loads(history.stdout)
        job_states = [e["State"] for e in events if e["Kind"] == "job"]
        assert job_states[0] == "Pending" and job_states[-1] == "Completed", job_states
        assert "Running" in job_states, job_states
        placed = [e for e in events if e["Kind"] == "execution" and "placed" in e["Message"]]
        assert len(placed) == 2, events
        assert history_table.code == 0 and "Completed" in history_table.stdout, history_table
        # A limited listing says where the next one starts; that one holds the rest.
        first = await run_cli("job", "history", job_id, "--limit", "3", "-o", "json", url=url)
        assert first.code == 0, first
        assert json.loads(first.stdout) == events[:3]
        hint = re.search(r"3 events shown; the next ones: --after (\d+)", first.stderr)
        assert hint is not None, first
        rest = await run_cli("job", "history", job_id, "--after", hint[1], "-o", "json", url=url)
        assert rest.code == 0, rest
        assert json.loads(rest.stdout) == events[3:]
        assert "shown" not in rest.stderr, rest

        assert logs.code == 0, logs
        assert logs.stdout.count("line from noop") == 2, logs

        assert listed.code == 0, listed
        assert [j["ID"] for j in json.loads(listed.stdout)] == [job_id]


async def test_cli_node_list(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    async with stack(nats_server.url, tmp_path) as s:
        await s.add_agent("gpu-1", labels={"gpu-type": "a100"})
        done, table = await asyncio.gather(
            run_cli("node", "list", "-o", "json", url=nats_server.url),
            run_cli("node", "list", url=nats_server.url),
        )
        assert done.code == 0, done
        nodes = {n["ID"]: n for n in json.loads(done.stdout)}
        assert set(nodes) == {"node-0", "node-1", "gpu-1"}
        for node_id, node in nodes.items():
            for key in ("ID", "Labels", "Connection", "Approval", "Engines", "Capacity"):
                assert key in node, (key, node)
            assert node["Connection"] == "CONNECTED"
            assert node["Labels"]["name"] == node_id
            assert {"os_type", "os_arch"} <= set(node["Labels"])
            assert "noop" in node["Engines"]
        assert nodes["gpu-1"]["Labels"]["gpu-type"] == "a100"
        assert table.code == 0, table
        assert "gpu-type=a100" in table.stdout and "CONNECTED" in table.stdout, table
