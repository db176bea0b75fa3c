"""Every spec fixture of the project and every spec of the reference corpus (where
SHOAL_COMPAT_CORPUS names it), submitted to a real stack: it runs, or it ends (or waits) with a
reason a user can act on. Images a spec names but this machine lacks are declined at bid time,
which is one of those reasons."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from compute.engines.docker import DockerEngine
from shared import wire
from shared.natsserver import EmbeddedNats
from shared.spec import load_spec
from tests.conftest import require
from tests.corpus import FIXTURE_VARIABLES, corpus_names, corpus_text, fixture_names, fixture_text
from tests.integration.stack import stack

pytestmark = pytest.mark.docker

#: The -V variables of the reference corpus's templated files.
CORPUS_VARIABLES = {
    "count": "1",
    "query": "SELECT 1",
    "Region": "eu",
    "Events": "3",
    "StartDate": "2024-01-01",
    "EndDate": "2024-01-02",
    "RotateInterval": "month",
    "AccessLogBucket": "logs",
    "AccessLogPrefix": "p/",
    "AWSRegion": "us-east-1",
    "model_url": "http://127.0.0.1:1/m",
    "input_bucket": "in",
    "classes": "0",
    "model_name": "m",
    "adb_password": "x",
    "fulltext": "t",
    "steps": "5",
    "bucket": "out",
    "queue_url": "http://127.0.0.1:1/q",
}
# What a user is told when a spec cannot run here; every refusal must say one of these.
REASONS = re.compile(
    r"does not support|does not match constraint|not on this node|not under an allowed|"
    r"too little|too few|declined|not enough nodes|waiting for|no node to run on|exit code|"
    r"no such file|cannot reach"
)
SPECS = [("fixture", name) for name in fixture_names()] + [
    ("corpus", name) for name in corpus_names()
]


def _settled(view: wire.JobView) -> bool:
    if view.terminal:
        return True
    if view.type in ("daemon", "service"):
        return any(e.compute_state == "running" for e in view.executions) or bool(
            view.state_message
        )
    return view.state == "Queued" and bool(view.state_message)


@pytest.mark.parametrize(("origin", "name"), SPECS, ids=[f"{o}:{n}" for o, n in SPECS])
async def test_spec_runs_or_says_why(
    origin: str, name: str, nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    if origin == "fixture":
        text, variables = fixture_text(name), FIXTURE_VARIABLES.get(name, {})
    else:
        text, variables = corpus_text(name), CORPUS_VARIABLES
    probe = DockerEngine()
    try:
        require(await probe.probe(), "needs a reachable docker daemon (.ci/docker-setup.sh)")
    finally:
        await probe.close()
    spec = load_spec(text, variables, source=name)
    async with (
        stack(
            nats_server.url,
            tmp_path,
            agents=1,
            engines=("docker", "wasm", "noop"),
            image_pull="never",  # the corpus names images of registries no test may reach
        ) as s,
        await s.client() as client,
    ):
        try:
            reply = await client.submit_full(spec)
            there = client.in_namespace(spec.namespace)  # a spec may name its own
            view = await there.wait(reply.job_id, timeout=60, until=_settled)
            if view.state == "Completed" or any(
                e.compute_state == "running" for e in view.executions
            ):
                return  # it runs here
            why = view.state_message + " " + " ".join(e.error for e in view.executions)
            assert REASONS.search(why), f"{name}: {view.state}: {why!r}"
        finally:
            for agent in s.agents.values():
                engine = agent.engines.get("docker")
                if isinstance(engine, DockerEngine):
                    await engine.close()
