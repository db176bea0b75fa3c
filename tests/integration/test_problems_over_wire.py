"""An invalid spec's problems cross the wire with their paths (`ApiError.Details`): the client
raises InvalidSpec with each problem where it is, and the CLI prints them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from orchestrator import api
from shared import subjects, wire
from shared.bus import Bus
from shared.errors import InvalidSpec, Problem
from shared.natsserver import EmbeddedNats
from shared.spec import JobSpec
from tests.integration.helpers_jobs import noop_job, run_cli
from tests.integration.stack import stack

BAD = {
    "Type": "batch",
    "Count": 0,
    "Tasks": [{"Engine": {"Type": "noop"}, "Resources": {"Memory": "1Zb", "CPU": "lots"}}],
}
WHERE = {"Count", "Tasks[0].Resources.Memory", "Tasks[0].Resources.CPU"}


async def test_the_client_raises_every_problem_with_its_path(
    nats_server: EmbeddedNats, bus: Bus, tmp_path: Path
) -> None:
    async with stack(nats_server.url, tmp_path, agents=0) as s, await s.client() as client:
        for spec in (BAD, yaml.safe_dump(BAD)):  # as JSON (`Spec`) and as text (`SpecText`)
            with pytest.raises(InvalidSpec) as info:
                await client.submit(spec)
            paths = {p.path for p in info.value.problems}
            assert paths == WHERE, info.value.problems
            for problem in info.value.problems:
                assert problem.message and not problem.message.startswith(problem.path)
            assert "3 problems" in str(info.value)
            assert "Tasks[0].Resources.Memory: " in str(info.value)

        # On the wire: the text as before (older clients read it), and the paths apart.
        raw = await bus.request(
            subjects.api("job.submit"),
            wire.encode(wire.SubmitRequest(spec=msgspec.Raw(msgspec.json.encode(BAD)))),
            timeout=10,
        )
        reply = msgspec.json.decode(raw)
        error = reply["Error"]
        assert reply["Ok"] is False and error["Code"] == "invalid", reply
        assert {d["Path"] for d in error["Details"]} == WHERE, error
        assert error["Problems"] == [f"{d['Path']}: {d['Message']}" for d in error["Details"]]
        assert all(p in error["Message"] for p in error["Problems"]), error


async def test_the_cli_prints_the_problems_the_orchestrator_found(
    nats_server: EmbeddedNats, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI checks a spec before it sends it, so only an orchestrator with rules of its
    own (here: a fleet too small for the job) refuses one the CLI accepted."""
    validate = api.spec_from_data

    def stricter(data: Any, *, source: str = "") -> JobSpec:
        spec = validate(data, source=source)
        if spec.name == "too-big":
            raise InvalidSpec(
                [
                    Problem("Tasks[0].Resources.Memory", "64Gb is more than any node has"),
                    Problem("Count", "40 is more than this namespace may run"),
                ]
            )
        return spec

    monkeypatch.setattr(api, "spec_from_data", stricter)
    path = tmp_path / "too-big.yaml"
    job = noop_job("too-big", count=40, resources={"Memory": "64Gb"})
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    async with stack(nats_server.url, tmp_path, agents=0) as s, await s.client() as client:
        with pytest.raises(InvalidSpec) as info:
            await client.submit(job)
        assert [(p.path, p.message) for p in info.value.problems] == [
            ("Tasks[0].Resources.Memory", "64Gb is more than any node has"),
            ("Count", "40 is more than this namespace may run"),
        ]
        done = await run_cli("job", "run", str(path), url=nats_server.url)
    assert done.code == 2, done
    assert "Traceback" not in done.stderr, done
    assert "2 problems:" in done.stderr, done
    assert "  - Tasks[0].Resources.Memory: 64Gb is more than any node has" in done.stderr, done
    assert "  - Count: 40 is more than this namespace may run" in done.stderr, done
