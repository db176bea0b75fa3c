"""A job no node would take says why, in the nodes' own words: each distinct refusal once,
with the nodes that gave it (batch, ops, service), and the list of nodes capped."""

from __future__ import annotations

from orchestrator.scheduler import Context, Plan, schedule
from orchestrator.selection import NodeState, Selection
from shared import wire
from shared.spec import JobSpec
from tests.unit.test_scheduler import NOW, execution, job, node, spec

IMAGE = "image foo:1 is not on this node"
LOCAL = "local path /x is not allowed here"


def declined(
    s: JobSpec,
    said: dict[str, str],
    *,
    busy: frozenset[str] = frozenset(),
    partition: int = 0,
    others: list[NodeState] | None = None,
    **job_fields: object,
) -> Plan:
    """The plan once every node in `said` declined `partition` just now, in those words."""
    execs = [
        execution(f"r-{n}", n, "rejected", partition=partition, updated=NOW - 1, error=text)
        for n, text in said.items()
    ]
    nodes = {n.id: n for n in [*(node(n) for n in said), *(others or [])]}
    refused = {partition: frozenset(said)}
    ctx = Context(job(s, **job_fields), s, execs, nodes, NOW, refused, busy)  # type: ignore[arg-type]
    return schedule(ctx)


def test_a_batch_job_no_node_took_names_each_refusal_with_its_nodes() -> None:
    plan = declined(spec(), {"node-0": IMAGE, "node-1": IMAGE, "node-2": LOCAL})
    assert plan.state == "Failed"
    assert f'3 nodes declined: "{IMAGE}" (node-0, node-1); "{LOCAL}" (node-2)' in plan.message, (
        plan.message
    )
    assert "declined the bid (" not in plan.message


def test_the_latest_refusal_of_a_node_is_the_one_shown() -> None:
    s = spec()
    execs = [
        execution("old", "a", "rejected", updated=NOW - 3, error="an older reason"),
        execution("new", "a", "rejected", updated=NOW - 1, error=LOCAL),
    ]
    ctx = Context(job(s), s, execs, {"a": node("a")}, NOW, {0: frozenset({"a"})})
    message = schedule(ctx).message
    assert f'1 node declined: "{LOCAL}" (a)' in message, message
    assert "older" not in message


def test_a_queued_job_says_what_the_nodes_said() -> None:
    s = spec(task={"Timeouts": {"QueueTimeout": 60}})
    plan = declined(s, {"a": LOCAL})
    assert plan.state == "Queued"
    assert plan.message == f'waiting for a node (up to 60s): 1 node declined: "{LOCAL}" (a)'


def test_a_node_declining_for_want_of_room_still_makes_the_job_wait() -> None:
    busy = "not enough free resources on this node right now"
    plan = declined(spec(), {"a": busy, "b": LOCAL}, busy=frozenset({"a"}))
    assert plan.state == "Queued", plan.message
    assert f'"{busy}" (a)' in plan.message and f'"{LOCAL}" (b)' in plan.message


def test_refusals_and_misfits_are_both_named() -> None:
    gpu_only = node("g", engines=("docker",))
    plan = declined(spec(), {"a": LOCAL}, others=[gpu_only])
    assert plan.state == "Failed"
    assert "does not support engine noop (1 node: g)" in plan.message, plan.message
    assert f'1 node declined: "{LOCAL}" (a)' in plan.message, plan.message


def test_the_node_list_of_a_refusal_is_capped() -> None:
    said = {f"n{i}": IMAGE for i in range(8)}
    plan = declined(spec(), said)
    assert f'8 nodes declined: "{IMAGE}" (n0, n1, n2, n3, n4 and 3 more)' in plan.message


def test_a_refusal_without_words_still_counts() -> None:
    sel = Selection(declined={"a": ""})
    assert sel.explain() == '1 node declined: "no reason given" (a)'


def test_a_service_waiting_for_nodes_names_the_refusals() -> None:
    plan = declined(spec("service", Count=1), {"a": IMAGE, "b": IMAGE}, state="Running")
    assert plan.state == "Running"
    assert plan.message == f'waiting for nodes: 2 nodes declined: "{IMAGE}" (a, b)'


def test_an_ops_job_every_node_declined_groups_the_refusals() -> None:
    s = spec("ops")
    execs: list[wire.ExecutionRecord] = [
        execution("r0", "node-0", "rejected", error=IMAGE),
        execution("r1", "node-1", "rejected", error=LOCAL),
        execution("r2", "node-2", "rejected", error=IMAGE),
    ]
    nodes = {n: node(n) for n in ("node-0", "node-1", "node-2")}
    plan = schedule(Context(job(s, state="Pending"), s, execs, nodes, NOW))
    assert plan.state == "Failed"
    assert plan.message == (
        f'every node declined the job: "{IMAGE}" (node-0, node-2); "{LOCAL}" (node-1)'
    )
