"""`shoal health PATH`: fresh, stale, missing, unreadable and disconnected status files, and the
writer that keeps one fresh (without a server: its snapshot is a plain function here)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner

from cli import health
from cli.health_writer import keep_fresh
from cli.main import shoal
from tests.conftest import eventually

REPO = Path(__file__).resolve().parents[2]


def record(**changes: object) -> health.Health:
    base = health.Health(
        role="orchestrator",
        name="orch-a",
        pid=4242,
        time=time.time(),
        ok=True,
        nats_connected=True,
        leading=True,
        nodes=3,
        jobs=7,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def check(path: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(shoal, ["health", str(path), *args])
    return result.exit_code, result.stdout, result.stderr


def test_fresh_and_connected_passes_with_a_one_line_summary(tmp_path: Path) -> None:
    path = tmp_path / "health"
    health.write(path, record())
    code, out, err = check(path)
    assert code == 0, err
    assert out.count("\n") == 1 and err == ""
    assert out.startswith("ok: orchestrator orch-a (pid 4242): leader, 3 nodes, 7 jobs")
    assert "NATS connected" in out

    compute = record(
        role="compute",
        name="ip-10-0-0-1.ec2.internal",
        node_id="ip-10-0-0-1-ec2-internal",
        registered=True,
        approval="APPROVED",
        running=2,
        leading=None,
        nodes=None,
        jobs=None,
    )
    health.write(path, compute)
    code, out, _ = check(path)
    assert code == 0
    assert "(node ip-10-0-0-1-ec2-internal)" in out
    assert "registered APPROVED, 2 running" in out


def test_stale_file_fails_with_its_age(tmp_path: Path) -> None:
    path = tmp_path / "health"
    health.write(path, record(time=time.time() - 95))
    code, out, err = check(path)
    assert code == 1 and out == ""
    assert "last written 95 s ago (max 30 s)" in err
    # a more patient reader (the liveness probe) accepts it
    code, _, err = check(path, "--max-age", "120")
    assert code == 0, err


def test_missing_file_says_what_to_check(tmp_path: Path) -> None:
    path = tmp_path / "nope"
    code, _, err = check(path)
    assert code == 1
    assert f"no health file at {path} (is the process running with --health-file?)" in err


def test_unreadable_content_fails_clearly(tmp_path: Path) -> None:
    path = tmp_path / "health"
    for content, expected in (
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "does not hold a JSON object"),
        (json.dumps({"role": "compute", "name": "n"}), "has no valid 'pid'"),
        (json.dumps({**dataclasses.asdict(record()), "time": "yesterday"}), "no valid 'time'"),
        (json.dumps({**dataclasses.asdict(record()), "pid": True}), "no valid 'pid'"),
    ):
        path.write_text(content)
        code, _, err = check(path)
        assert code == 1, content
        assert expected in err and "Traceback" not in err, (content, err)


def test_unknown_keys_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "health"
    path.write_text(json.dumps({**dataclasses.asdict(record()), "from_the_future": 1}))
    assert check(path)[0] == 0


def test_disconnected_fails_unless_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "health"
    now = time.time()
    down = record(
        ok=False, nats_connected=False, reason="NATS disconnected", disconnected_since=now - 40
    )
    health.write(path, down)
    code, _, err = check(path)
    assert code == 1
    assert "orchestrator orch-a (pid 4242): NATS disconnected for 40 s" in err
    code, out, _ = check(path, "--max-disconnected", "300")
    assert code == 0 and "NATS disconnected" in out
    code, _, err = check(path, "--max-disconnected", "10")
    assert code == 1 and "NATS disconnected for 40 s (max 10 s)" in err
    # not ok for another reason
    health.write(path, record(ok=False, reason="draining"))
    code, _, err = check(path)
    assert code == 1 and "draining" in err


def test_bad_arguments_are_usage_errors(tmp_path: Path) -> None:
    assert check(tmp_path / "x", "--max-age", "0")[0] == 2
    assert check(tmp_path / "x", "--max-age", "soon")[0] == 2


def test_write_replaces_atomically(tmp_path: Path) -> None:
    path = tmp_path / "health"
    health.write(path, record(jobs=1))
    health.write(path, record(jobs=2))
    assert health.read(path).jobs == 2
    assert [p.name for p in tmp_path.iterdir()] == ["health"]  # no temporary file left


def test_the_command_imports_nothing_heavy(tmp_path: Path) -> None:
    """A probe runs every few seconds on every pod: no nats, pydantic, msgspec or yaml."""
    path = tmp_path / "health"
    health.write(path, record())
    code = (
        "import sys\n"
        "from cli.main import shoal\n"
        "try:\n"
        f"    shoal(['health', {str(path)!r}], prog_name='shoal')\n"
        "except SystemExit as exc:\n"
        "    assert exc.code in (0, None), exc.code\n"
        "heavy = ('nats', 'pydantic', 'msgspec', 'yaml', 'asyncio', 'shared', 'compute')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout


async def test_writer_keeps_the_file_fresh_and_removes_it(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "health"  # the directory is created
    connected = True

    def snapshot() -> health.Health:
        return record(ok=connected, nats_connected=connected)

    def written() -> health.Health | None:
        return health.read(path) if path.exists() else None

    async with keep_fresh(path, snapshot):
        first = await eventually(written, what="a write")
        assert first is not None
        assert first.ok and first.disconnected_since is None
        assert health.problem(first, time.time(), 30) is None
    assert not path.exists()

    connected = False
    async with keep_fresh(path, snapshot):
        down = await eventually(written, what="a write")
        assert down is not None
        assert not down.ok and down.reason == "NATS disconnected"
        assert down.disconnected_since is not None
        assert health.problem(down, time.time(), 30) == "NATS disconnected for 0 s"
    assert not path.exists()

    async with keep_fresh(None, snapshot):  # no --health-file: nothing written
        pass
    assert list(tmp_path.iterdir()) == [tmp_path / "sub"]
