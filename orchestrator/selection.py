"""Node selection: which nodes can take a task (with the reason for each that cannot), ranked."""

from __future__ import annotations

import itertools
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence, ValuesView
from dataclasses import dataclass, field, replace

from shared import wire
from shared.constraints import Requirement, first_unmet
from shared.spec import JobSpec
from shared.units import format_cpu, format_size

# Above this many nodes a placement looks at nodes from a random starting point until
# SAMPLE good candidates (fitting, not avoided, not yet running this job) are found, and ranks
# those, instead of checking and ranking the whole fleet: O(SAMPLE), not O(fleet), per
# placement (the "power of k choices" Nomad also uses). Smaller fleets are ranked whole.
SAMPLE_ABOVE = 128
SAMPLE = 16


@dataclass(frozen=True, slots=True)
class NodeState:
    """What the scheduler knows of one node: registry facts plus live free capacity."""

    id: str
    labels: dict[str, str]
    engines: frozenset[str]
    publishers: frozenset[str]
    sources: frozenset[str]
    capacity: wire.Capacity
    free: wire.Capacity
    approval: str = "APPROVED"
    connected: bool = True
    # Its last bid found someone listening: an offer to a node whose agent is not subscribed
    # (stopping, not started yet, reconnecting) would only be taken back.
    listening: bool = True
    drain: bool = False
    network: bool = True
    running: int = 0

    def take(self, demand: wire.Capacity) -> NodeState:
        """This node with `demand` subtracted, for placing several executions in one plan."""
        return replace(self, free=self.free.minus(demand), running=self.running + 1)


class NodeTable(Mapping[str, NodeState]):
    """Nodes by id, and also as a list: a placement on a large fleet samples from a random
    place in it, which a dict cannot give without copying it whole."""

    __slots__ = ("_by_id", "_listed", "_slot")

    def __init__(self) -> None:
        self._by_id: dict[str, NodeState] = {}
        self._listed: list[NodeState] = []
        self._slot: dict[str, int] = {}

    def __getitem__(self, node_id: str) -> NodeState:
        return self._by_id[node_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_id)

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._by_id

    def get(self, node_id: str, default: NodeState | None = None) -> NodeState | None:  # type: ignore[override]
        return self._by_id.get(node_id, default)

    def values(self) -> ValuesView[NodeState]:
        return self._by_id.values()

    def listed(self) -> Sequence[NodeState]:
        """Every node, in no particular order; read it, never keep it."""
        return self._listed

    def put(self, node: NodeState) -> None:
        slot = self._slot.get(node.id)
        if slot is None:
            self._slot[node.id] = len(self._listed)
            self._listed.append(node)
        else:
            self._listed[slot] = node
        self._by_id[node.id] = node

    def remove(self, node_id: str) -> None:
        slot = self._slot.pop(node_id, None)
        if slot is None:
            return
        del self._by_id[node_id]
        last = self._listed.pop()
        if last.id != node_id:  # the last one fills the hole
            self._listed[slot] = last
            self._slot[last.id] = slot


def listed(nodes: Mapping[str, NodeState]) -> Sequence[NodeState]:
    """`nodes` as a sequence: the table's own list, or a copy of any other mapping's."""
    return nodes.listed() if isinstance(nodes, NodeTable) else list(nodes.values())


def misfit(
    node: NodeState, spec: JobSpec, demand: wire.Capacity, requirements: Iterable[Requirement]
) -> str | None:
    """Why `node` cannot run `spec` now, or None if it can."""
    task = spec.task
    if node.approval != "APPROVED":
        return f"node is {node.approval.lower()}"
    if not node.connected:
        return "node is disconnected"
    if not node.listening:  # "busy": it may answer any moment; a job waits rather than fails
        return "busy: its agent took no bid lately (stopping or reconnecting)"
    if node.drain:
        return "node is draining"
    if task.engine.type not in node.engines:
        return f"does not support engine {task.engine.type}"
    publisher = task.publisher.type
    if publisher and publisher not in node.publishers:
        return f"does not support publisher {publisher}"
    for src in task.input_sources:
        if src.source.type not in node.sources:
            return f"does not support input source {src.source.type}"
    unmet = first_unmet(requirements, node.labels)
    if unmet is not None:
        return f"does not match constraint {unmet.describe()}"
    if task.network.type != "None" and not node.network:
        return "does not allow networking"
    cap = node.capacity
    short = cap.short_of(demand)
    if short is not None:
        fewer = "few" if short == "GPUs" else "little"
        return f"too {fewer} {short} ({_amount(short, demand)} asked, {_amount(short, cap)} in all)"
    short = node.free.short_of(demand)
    if short is not None:
        return f"busy: {_amount(short, node.free)} {short} free, {_amount(short, demand)} asked"
    if cap.executions and node.running >= cap.executions:
        return "busy: no free execution slot"
    return None


def _amount(resource: str, of: wire.Capacity) -> str:
    """How much of `resource` (as `Capacity.short_of` names it) `of` holds, for a person."""
    if resource == "CPU":
        return format_cpu(max(of.cpu_millis, 0))
    if resource == "memory":
        return format_size(max(of.memory_bytes, 0))
    return str(max(of.gpus, 0))


# Node ids named per reason in a message; the others are counted ("and 3 more").
SHOWN_NODES = 5


def _nodes(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:SHOWN_NODES])
    return shown + (f" and {len(ids) - SHOWN_NODES} more" if len(ids) > SHOWN_NODES else "")


def by_reason(reasons: Mapping[str, str]) -> list[tuple[str, list[str]]]:
    """Each distinct reason with the nodes (sorted) that gave it, the commonest first."""
    nodes_of: defaultdict[str, list[str]] = defaultdict(list)
    for node_id, reason in sorted(reasons.items()):
        nodes_of[reason].append(node_id)
    return sorted(nodes_of.items(), key=lambda kv: (-len(kv[1]), kv[0]))


def quoted(said: Mapping[str, str]) -> str:
    """What nodes said, each distinct text once, quoted, with the nodes that said it:
    `"image x:1 is not on this node" (node-0, node-1); "local path /x ..." (node-2)`."""
    return "; ".join(
        f'"{text or "no reason given"}" ({_nodes(ids)})' for text, ids in by_reason(said)
    )


@dataclass(slots=True)
class Selection:
    """The nodes that fit, best first, why the others do not, and what those that declined
    the bid said (the nodes' own words: an image they lack, a path they do not allow)."""

    fit: list[NodeState] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)
    declined: dict[str, str] = field(default_factory=dict)
    declined_busy: set[str] = field(default_factory=set)  # of those, the ones without room

    def explain(self) -> str:
        if not self.reasons and not self.declined:
            return "no compute nodes are registered"
        parts = [
            f"{reason} ({len(ids)} node{'s' if len(ids) != 1 else ''}: {_nodes(ids)})"
            for reason, ids in by_reason(self.reasons)
        ]
        if self.declined:
            n = len(self.declined)
            parts.append(f"{n} node{'s' if n != 1 else ''} declined: {quoted(self.declined)}")
        return "; ".join(parts)

    @property
    def capacity_bound(self) -> bool:
        """No node has room, and some node that could run the task is merely busy: the job
        can wait for capacity rather than fail. Nodes that can never run it (another engine,
        unmet constraints, too small, declined for good) have no say in that."""
        return bool(self.declined_busy) or any(r.startswith("busy") for r in self.reasons.values())


def select(
    nodes: Iterable[NodeState],
    spec: JobSpec,
    *,
    spread: Counter[str] | None = None,
    avoid: frozenset[str] = frozenset(),
    sample: bool = False,
    skip: frozenset[str] | set[str] = frozenset(),
    overlay: Mapping[str, NodeState] | None = None,
    ranked: bool = True,
) -> Selection:
    """Filter then rank: most free capacity, fewest executions of this job, not `avoid`.

    With `sample` (one placement, not every node) a large fleet is sampled: see SAMPLE_ABOVE.
    Nodes in `skip` are left out (no reason given); a node in `overlay` is seen as it is
    there (what a placement earlier in the same plan left of it). Without `ranked` (for jobs
    that go on every fitting node) the fitting nodes stay in the fleet's order, unscored.
    """
    demand = wire.Capacity.of(spec.task.resources)
    requirements = spec.requirements()
    spread = spread or Counter()
    out = Selection()
    order: Iterable[NodeState] = nodes
    if sample:
        pool = nodes if isinstance(nodes, Sequence) else list(nodes)
        if len(pool) > SAMPLE_ABOVE:
            start = random.randrange(len(pool))
            order = itertools.chain(
                itertools.islice(pool, start, None), itertools.islice(pool, start)
            )
        else:
            sample = False
    good = 0
    for node in order:
        if node.id in skip:
            continue
        if overlay:
            node = overlay.get(node.id, node)
        reason = misfit(node, spec, demand, requirements)
        if reason is not None:
            out.reasons[node.id] = reason
            continue
        out.fit.append(node)
        if sample and node.id not in avoid and not spread[node.id]:
            good += 1
            if good >= SAMPLE:
                break

    def score(node: NodeState) -> tuple[float, str]:
        cap, free = node.capacity, node.free
        room = (free.cpu_millis / cap.cpu_millis if cap.cpu_millis else 1.0) + (
            free.memory_bytes / cap.memory_bytes if cap.memory_bytes else 1.0
        )
        penalty = 2.0 * spread[node.id] + (4.0 if node.id in avoid else 0.0) + 0.01 * node.running
        return (penalty - room, node.id)

    if ranked:
        out.fit.sort(key=score)
    return out
