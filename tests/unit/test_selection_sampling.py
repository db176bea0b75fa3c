"""Placement on a large fleet looks at a sample of good nodes, never misses a lone fit."""

from __future__ import annotations

import random
from collections import Counter

from orchestrator.scheduler import Context, schedule
from orchestrator.selection import SAMPLE, SAMPLE_ABOVE, NodeTable, select
from tests.unit.test_scheduler import NOW, job, node, spec


def test_small_fleets_are_ranked_whole() -> None:
    nodes = [node(f"n{i}") for i in range(SAMPLE_ABOVE)]
    chosen = select(nodes, spec(), sample=True)
    assert len(chosen.fit) == SAMPLE_ABOVE


def test_a_large_fleet_is_sampled_until_enough_good_nodes() -> None:
    nodes = [node(f"n{i}") for i in range(5_000)]
    chosen = select(nodes, spec(), sample=True)
    assert len(chosen.fit) == SAMPLE
    assert not chosen.reasons


def test_avoided_and_busy_with_this_job_do_not_count_towards_the_sample() -> None:
    nodes = [node(f"n{i}") for i in range(1_000)]
    avoid = frozenset(f"n{i}" for i in range(0, 1_000, 2))
    spread = Counter({f"n{i}": 1 for i in range(1, 1_000, 4)})
    chosen = select(nodes, spec(), sample=True, avoid=avoid, spread=spread)
    good = [n for n in chosen.fit if n.id not in avoid and not spread[n.id]]
    assert len(good) == SAMPLE
    best = chosen.fit[0]
    assert best.id not in avoid and not spread[best.id]


def test_the_only_fitting_node_of_a_large_fleet_is_found() -> None:
    nodes = [node(f"n{i}", engines=("wasm",)) for i in range(3_000)]
    nodes.append(node("odd-one", engines=("noop",)))
    chosen = select(nodes, spec(), sample=True)
    assert [n.id for n in chosen.fit] == ["odd-one"]
    assert len(chosen.reasons) == 3_000  # every other node was looked at and explained


def test_nothing_fits_explains_every_node() -> None:
    nodes = [node(f"n{i}", engines=("wasm",)) for i in range(500)]
    chosen = select(nodes, spec(), sample=True)
    assert not chosen.fit and len(chosen.reasons) == 500
    assert "does not support engine noop (500 nodes" in chosen.explain()


def test_a_batch_job_on_a_large_fleet_spreads_its_partitions() -> None:
    s = spec(Count=20)
    nodes = {f"n{i}": node(f"n{i}") for i in range(2_000)}
    plan = schedule(Context(job(s), s, [], nodes, NOW))
    assert len(plan.place) == 20
    assert len({p.node_id for p in plan.place}) == 20


def test_the_node_table_keeps_its_list_and_its_index_in_step() -> None:
    # The registry's table: random puts, replacements and removals, checked against a dict.
    rng = random.Random(7)
    table, truth = NodeTable(), {}
    for step in range(3_000):
        node_id = f"n{rng.randrange(60)}"
        if rng.random() < 0.3:
            table.remove(node_id)
            truth.pop(node_id, None)
        else:
            state = node(node_id, cpu=step)
            table.put(state)
            truth[node_id] = state
        assert dict(table) == truth
        assert sorted(table.listed(), key=lambda n: n.id) == sorted(
            truth.values(), key=lambda n: n.id
        )
        assert list(table.values()) == list(truth.values()) and len(table) == len(truth)


def test_a_plan_on_the_registry_table_samples_it_and_sees_what_it_placed() -> None:
    # Two tasks that each need half of the only fitting node's CPU, on a sampled fleet.
    table = NodeTable()
    for i in range(500):
        table.put(node(f"w{i}", engines=("wasm",)))
    table.put(node("a", cpu=2000))
    s = spec(Count=3, task={"Resources": {"CPU": "1"}})
    plan = schedule(Context(job(s), s, [], table, NOW))
    assert [p.node_id for p in plan.place] == ["a", "a"]
    assert plan.state == "Queued"
