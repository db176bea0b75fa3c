"""/metrics, scraped over HTTP and parsed with prometheus_client's parser, counts the jobs a test
ran: submitted, completed, failed, stopped, their latencies, placement failures, nodes, the
leader, and the agent's executions by engine and outcome."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from orchestrator import metrics as orchestrator_metrics
from shared.natsserver import EmbeddedNats
from shared.probes import Probes
from tests.conftest import eventually
from tests.integration.helpers_jobs import constraint, in_state, noop_job, running_on_agent
from tests.integration.stack import FAST, Stack

# (metric sample name, its labels sorted) -> value
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(url: str) -> Samples:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def delta(before: Samples, after: Samples) -> Callable[..., float]:
    def of(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    return of


@pytest.fixture
async def observed(nats_server: EmbeddedNats, tmp_path: Path) -> AsyncIterator[tuple[Stack, str]]:
    """One orchestrator (failed tasks are not retried) and one noop agent, their metrics served
    on a free port of 127.0.0.1."""
    s = Stack(nats_server.url, tmp_path)
    forget: Callable[[], None] = lambda: None  # noqa: E731
    try:
        orch = await s.start_orchestrator(dataclasses.replace(FAST, max_attempts=1))
        forget = orchestrator_metrics.observe(orch)
        await s.add_agent("node-0", engines=("noop",))
        async with Probes(host="127.0.0.1", port=0, buses=[orch.bus]) as probes:
            yield s, probes.url
    finally:
        forget()
        await s.close()


def labels_of(samples: Samples, name: str) -> list[Mapping[str, str]]:
    return [dict(labels) for (n, labels) in samples if n == name]


async def test_metrics_count_the_jobs_run(observed: tuple[Stack, str]) -> None:
    stack, url = observed
    before = await scrape(url)
    async with await stack.client() as client:
        ok = [await client.submit(noop_job(f"ok-{i}")) for i in range(3)]
        bad = await client.submit(noop_job("exits-1", exit_code=1))
        # No node has this label: nowhere to place it, and no QueueTimeout: it fails at once.
        nowhere = await client.submit(
            noop_job("nowhere", constraints=[constraint("zone", "=", "mars")])
        )
        long = await client.submit(noop_job("long", sleep=60))
        for job_id in ok:
            assert (await client.wait(job_id, timeout=30)).state == "Completed"
        for job_id in (bad, nowhere):
            assert (await client.wait(job_id, timeout=30)).state == "Failed"
        await eventually(lambda: running_on_agent(client, long), what="the long job running")
        await client.stop(long)
        await eventually(lambda: in_state(client, long, "Stopped"), what="the long job stopped")

    async def settled() -> Samples:
        after = await scrape(url)
        d = delta(before, after)
        # The counters follow the state written: the leader bumps them just after its write
        # (and counts a stop when it takes the stop's evaluation from the queue).
        assert d("shoal_jobs_submitted_total", type="batch") == 6
        assert d("shoal_jobs_stopped_total", type="batch") == 1
        assert d("shoal_jobs_completed_total", type="batch") == 3
        assert d("shoal_jobs_failed_total", type="batch") == 2
        assert d("shoal_job_submit_to_end_seconds_count", type="batch") == 6
        assert d("shoal_heartbeats_received_total") > 0  # (one every 0.2 s: the jobs are faster)
        assert (
            d("shoal_agent_execution_duration_seconds_count", engine="noop", outcome="cancelled")
            == 1
        )
        return after

    after = await eventually(settled, what="the counters of the 6 jobs")
    d = delta(before, after)
    assert d("shoal_jobs_purged_total", type="batch") == 0
    assert d("shoal_jobs_submitted_total", type="service") == 0
    # States, read from the mirror at scrape time (this server holds only this test's jobs).
    assert value(after, "shoal_jobs", state="Completed", type="batch") == 3
    assert value(after, "shoal_jobs", state="Failed", type="batch") == 2
    assert value(after, "shoal_jobs", state="Stopped", type="batch") == 1
    assert value(after, "shoal_jobs", state="Running", type="batch") == 0
    assert len(labels_of(after, "shoal_jobs")) == 6 * 4  # every state by every type
    # Latencies: 5 jobs ran a task (the failing one and the stopped one too), 6 ended.
    assert d("shoal_job_submit_to_running_seconds_count", type="batch") == 5
    assert d("shoal_job_submit_to_end_seconds_count", type="batch") == 6
    assert d("shoal_job_submit_to_end_seconds_bucket", type="batch", le="+Inf") == 6
    assert d("shoal_job_submit_to_end_seconds_sum", type="batch") > 0
    assert d("shoal_evaluation_duration_seconds_count") >= 6
    assert d("shoal_placement_failures_total", reason="no_node_fits") >= 1
    assert {lb["reason"] for lb in labels_of(after, "shoal_placement_failures_total")} == {
        "no_node_fits",
        "declined",
        "busy",
        "no_answer",
        "not_listening",
        "unplaceable",
    }
    assert value(after, "shoal_eval_queue_depth") >= 0
    assert value(after, "shoal_leader") == 1
    assert value(after, "shoal_nodes", connection="CONNECTED", approval="APPROVED") == 1
    assert value(after, "shoal_nodes", connection="DISCONNECTED", approval="APPROVED") == 0
    assert d("shoal_execution_updates_applied_total", state="completed") == 3
    assert ("shoal_nats_reconnects_total", ()) in after
    assert value(after, "shoal_nats_reconnects_total") == 0
    # The agent (same process): 5 executions by engine and outcome, nothing running now.
    assert (
        d("shoal_agent_execution_duration_seconds_count", engine="noop", outcome="completed") == 3
    )
    assert d("shoal_agent_execution_duration_seconds_count", engine="noop", outcome="failed") == 1
    assert value(after, "shoal_agent_running_executions") == 0
    agent = stack.agents["node-0"]
    total = value(after, "shoal_agent_capacity_cpu_millis", kind="total")
    assert total == agent.capacity.cpu_millis > 0
    assert value(after, "shoal_agent_capacity_cpu_millis", kind="free") == total
    assert value(after, "shoal_agent_capacity_memory_bytes", kind="used") == 0
    # Never an id as a label value.
    ids = {*ok, bad, nowhere, long, "node-0"}
    assert not any(v in ids for _, labels in after for _, v in labels)


async def test_running_executions_and_used_capacity_while_a_task_runs(
    observed: tuple[Stack, str],
) -> None:
    stack, url = observed
    async with await stack.client() as client:
        job = noop_job("holds-room", sleep=60, resources={"CPU": "250m", "Memory": "64Mi"})
        job_id = await client.submit(job)
        await eventually(lambda: running_on_agent(client, job_id), what="the task running")

        async def holding() -> Samples:
            now = await scrape(url)
            assert value(now, "shoal_agent_running_executions") == 1
            assert value(now, "shoal_agent_capacity_cpu_millis", kind="used") == 250
            assert value(now, "shoal_agent_capacity_memory_bytes", kind="used") == 64 * 2**20
            assert value(now, "shoal_jobs", state="Running", type="batch") == 1
            return now

        await eventually(holding, what="the agent's gauges showing the running task")
        await client.stop(job_id)
