"""The node registry: hello and heartbeat handling, liveness in memory, KV on transitions.

What a node's joining, change, loss or strays make the orchestrator evaluate is `NodeEvents`'
business (`evaluation_rules.py`); the registry only says what happened. The records' writes
are `node_records.py`'s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping

import msgspec

from orchestrator import metrics
from orchestrator.liveness import Liveness, NodeEvents, Unheard
from orchestrator.node_records import NodeRecords, collectable, why_kept
from orchestrator.selection import NodeState, NodeTable
from orchestrator.state import StateMirror
from shared import subjects, wire
from shared.bus import Bus, Message, Subscription
from shared.errors import Conflict, ShoalError
from shared.memory import shrink

log = logging.getLogger(__name__)

# How long an execution a node runs may stay unknown to the mirror before it counts as a
# stray: a leader's mirror can trail KV for seconds (a new leader's, or one whose watch was
# re-created after its server died), and would cancel what the leader before it had placed.
UNKNOWN_GRACE = 5.0


class NodeRegistry:
    def __init__(
        self,
        bus: Bus,
        mirror: StateMirror,
        *,
        heartbeat_interval: float,
        disconnect_timeout: float,
        manual_approval: bool = False,
        leading: Callable[[], bool] = lambda: True,
        gc_after: float = 0.0,
    ) -> None:
        """`gc_after`: seconds a node may stay DISCONNECTED before the leader's sweep removes
        it (0: never)."""
        self._bus = bus
        self._mirror = mirror
        self.heartbeat_interval = heartbeat_interval
        self.disconnect_timeout = disconnect_timeout
        self.gc_after = gc_after
        self._records = NodeRecords(mirror, manual_approval=manual_approval)
        self._live: dict[str, Liveness] = {}
        # Set by whoever wires the registry: what reacts to these events also needs the
        # planner, which needs this registry, so it cannot be had at construction.
        self.events: NodeEvents = Unheard()
        # Only the leader reconciles what nodes run against state: a follower's mirror trails
        # the leader's writes, so it would take executions just placed for strays.
        self._leading = leading
        self._lock = asyncio.Lock()
        self._subscriptions: list[Subscription] = []
        # An offer counts as forgotten (lost: the node never got it, or no longer knows it)
        # once it is this old and the node's heartbeat does not list it; only an offer whose
        # bid this orchestrator did not see through (`_offered`), e.g. one made by an
        # orchestrator that died mid-bid.
        self.forget_after = 15.0
        # Offers made here and not over (their bid in flight, or taken): execution id -> when
        # made. The node answered such a bid, or will within the bid timeout, so it is never
        # taken for forgotten: a node that took it lists it while it runs and stores its end
        # in the updates stream, which the applier may be far behind under load; only a
        # restart (new BootID) or the disconnect timeout lose it. Its record's `created_at`
        # is no offer time either: the planner stamps every offer of a plan with the plan's
        # start, and a plan of 50,000 offers takes a minute to send.
        self._offered: dict[str, float] = {}
        self._offers_pruned_at = 0.0
        self._unknown: dict[str, float] = {}  # execution id -> when first reported, unknown
        # The scheduler's view of every node, rebuilt only for nodes that changed: rebuilt
        # whole, every evaluation would pay for the whole fleet.
        self._states = NodeTable()
        self._dirty: set[str] = set()
        self._all_dirty = True
        mirror.on_node_change = self._dirty.add

    # ---- views for the scheduler and the API ---------------------------------------------------

    def compact(self) -> None:
        """Rebuild the offer tables at the size of the offers out now (after a burst)."""
        shrink(
            self._offered, self._unknown, self._dirty, *(v.reserved for v in self._live.values())
        )

    def states(self) -> Mapping[str, NodeState]:
        """Every registered node as the scheduler sees it: the registry's own table, to read
        before the next await and never change (a copy would cost every evaluation time in
        proportion to the fleet)."""
        if self._all_dirty:
            self._dirty.update(self._mirror.nodes, self._states)
            self._all_dirty = False
        for node_id in self._dirty:
            versioned = self._mirror.nodes.get(node_id)
            if versioned is None:  # removed (here or by another orchestrator)
                self._states.remove(node_id)
                self._live.pop(node_id, None)
            else:
                self._states.put(self._state_of(node_id, versioned.value))
        self._dirty.clear()
        return self._states

    def _state_of(self, node_id: str, rec: wire.NodeRecord) -> NodeState:
        live = self._live.get(node_id)
        free = rec.info.capacity if live is None else self._free(live)
        return NodeState(
            id=node_id,
            labels=rec.info.labels,
            engines=frozenset(rec.info.engines),
            publishers=frozenset(rec.info.publishers),
            sources=frozenset(rec.info.sources),
            capacity=rec.info.capacity,
            free=free,
            approval=rec.approval,
            connected=rec.connection == "CONNECTED",
            listening=live is None or not live.deaf,
            drain=rec.drain,
            network=rec.info.network,
            running=len(live.running) + len(live.reserved) if live else 0,
        )

    def liveness(self, node_id: str) -> Liveness | None:
        return self._live.get(node_id)

    def public_key(self, node_id: str) -> str:
        """The X25519 key (base64) the node said hello with, that its secrets are sealed
        for; empty for an agent older than secrets (or a node not registered)."""
        versioned = self._mirror.nodes.get(node_id)
        return versioned.value.public_key if versioned is not None else ""

    def not_listening(self, node_id: str) -> None:
        """Nobody took the node's bid: offer it no more work until it says hello again."""
        live = self._live.get(node_id)
        if live is not None and not live.deaf:
            live.deaf = True
            self._dirty.add(node_id)

    @staticmethod
    def _free(live: Liveness) -> wire.Capacity:
        free = live.free
        for demand, _ in live.reserved.values():
            free = free.minus(demand)
        return free

    def reserve(self, node_id: str, execution_id: str, demand: wire.Capacity) -> None:
        """Count an offer against the node (from the moment it is made) until its heartbeat
        reports the execution running, or `release` (the offer was not taken, or it ended)."""
        now = time.time()
        self._offered[execution_id] = now
        live = self._live.get(node_id)
        if live is not None:
            live.reserved[execution_id] = (demand, now)
            self._dirty.add(node_id)

    def release(self, node_id: str, execution_id: str) -> None:
        self._offered.pop(execution_id, None)
        live = self._live.get(node_id)
        if live is not None and live.reserved.pop(execution_id, None) is not None:
            self._dirty.add(node_id)

    # ---- handlers ------------------------------------------------------------------------------

    def reset_liveness(self) -> None:
        """On becoming leader: nodes not heard from yet get a full timeout to check in."""
        now = time.time()
        self._all_dirty = True
        for node_id, versioned in self._mirror.nodes.items():
            if versioned.value.connection == "CONNECTED" and node_id not in self._live:
                self._live[node_id] = Liveness(
                    now, versioned.value.info.capacity, boot_id=versioned.value.boot_id
                )

    async def start(self) -> None:
        # Hellos go to one orchestrator (they write KV); heartbeats to all, so a follower
        # that becomes leader already knows who is alive.
        self._subscriptions = [
            await self._bus.subscribe(subjects.ALL_HELLOS, self._hello, queue=subjects.API_QUEUE),
            await self._bus.subscribe(subjects.ALL_HEARTBEATS, self._heartbeat),
        ]

    async def drain(self, timeout: float) -> None:
        """Take no more hellos (the queue group hands them to the other orchestrators) nor
        heartbeats, and finish the ones taken. Idempotent."""
        subscriptions, self._subscriptions = self._subscriptions, []
        for subscription in subscriptions:
            if not await subscription.drain(timeout):
                log.warning("node messages still being handled after %.0fs of stopping", timeout)

    async def _hello(self, msg: Message) -> None:
        try:
            hello = wire.decode(msg.data, wire.Hello, what=msg.subject)
            node_id = subjects.check_token(subjects.node_of(msg.subject), "node id")
            if hello.node.id != node_id:
                raise Conflict(f"hello on {msg.subject} names node {hello.node.id!r}")
            reply = await self._register(hello)
        except ShoalError as exc:
            await self._bus.respond(
                msg,
                wire.encode(
                    wire.ApiReply(ok=False, error=wire.ApiError(code=exc.code, message=str(exc)))
                ),
            )
            return
        await self._bus.respond(
            msg, wire.encode(wire.ApiReply(ok=True, data=msgspec.Raw(wire.encode(reply))))
        )

    async def _register(self, hello: wire.Hello) -> wire.HelloReply:
        node_id = hello.node.id
        now = time.time()
        async with self._lock:
            # Giving up raises: the hello is answered with the error (the node says hello
            # again), never as registered with a record that was not stored.
            known, record, changed = await self._records.hello(hello, now)
            restarted = known is not None and known.value.boot_id != hello.boot_id
        running = {r.id for r in hello.running}
        previous = self._live.get(node_id)
        self._live[node_id] = Liveness(
            now,
            previous.free if previous and not restarted else hello.node.capacity,
            frozenset(running),
            hello.boot_id,
            reserved=previous.reserved if previous and not restarted else {},
        )
        self._dirty.add(node_id)
        cancel = self._unwanted(running, node_id, now) if self._leading() else []
        if restarted:
            # Whatever the node ran before its restart and no longer reports is gone.
            gone = [e.id for e in self._mirror.live_on(node_id) if e.id not in running]
            if gone:
                self.events.strays(node_id, gone, f"node {node_id} restarted without it")
        if known is None or restarted:  # re-hellos every 30 s are routine: not worth a line
            log.info("node %s registered (%s)", node_id, record.approval)
        if changed or restarted:
            # Nor worth an evaluation: at 10,000 nodes that was 333 a second of every daemon
            # and queued job.
            self.events.node_ready(node_id)
        return wire.HelloReply(
            approval=record.approval, heartbeat_interval=self.heartbeat_interval, cancel=cancel
        )

    def _unwanted(self, running: Iterable[str], node_id: str, now: float) -> list[str]:
        """What `node_id` runs that should not run there; an id the mirror has never shown
        only once it has stayed unknown for UNKNOWN_GRACE."""
        out = []
        for exec_id in running:
            if self._wanted(exec_id, node_id):
                continue
            if exec_id not in self._mirror.executions:
                if len(self._unknown) > 10_000:  # ids that became known or went away
                    self._unknown = {
                        k: t for k, t in self._unknown.items() if now - t < 4 * UNKNOWN_GRACE
                    }
                if now - self._unknown.setdefault(exec_id, now) < UNKNOWN_GRACE:
                    continue
            out.append(exec_id)
        return out

    def _wanted(self, execution_id: str, node_id: str) -> bool:
        if self._mirror.in_flight.is_creating_execution(execution_id):
            return True  # offered while its record is being written
        known = self._mirror.executions.get(execution_id)
        return (
            known is not None
            and known.value.node_id == node_id
            and known.value.live
            and known.value.desired_state == "running"
        )

    async def _heartbeat(self, msg: Message) -> None:
        try:
            beat = wire.decode(msg.data, wire.Heartbeat, what=msg.subject)
        except ShoalError as exc:
            log.warning("dropping heartbeat on %s: %s", msg.subject, exc)
            return
        metrics.HEARTBEATS.inc()
        node_id = subjects.node_of(msg.subject)
        record = self._mirror.nodes.get(node_id)
        if record is None or beat.node_id != node_id:
            return  # unknown node: it must say hello first (it re-sends hello when unanswered)
        now = time.time()
        live = self._live.get(node_id)
        running = frozenset(beat.running)
        roomier = False
        if live is None:
            live = self._live[node_id] = Liveness(now, beat.free, running, beat.boot_id)
            self._dirty.add(node_id)
        elif live.free != beat.free or live.running != running:
            self._dirty.add(node_id)
            roomier = beat.free.roomier_than(live.free) or bool(live.running - running)
        live.last_seen, live.free, live.running = now, beat.free, running
        # Heard again after a bid found nobody listening: it may get work now. (A stopping
        # agent still heartbeats: its next offer is then only taken back, never recorded.)
        back = live.deaf
        if back:
            live.deaf = False
            self._dirty.add(node_id)
        for exec_id, (_, at) in list(live.reserved.items()):
            if exec_id in running or now - at > 2 * self.heartbeat_interval + 1:
                del live.reserved[exec_id]
                self._dirty.add(node_id)
        if record.value.connection == "DISCONNECTED":
            try:
                await self._transition(node_id, "CONNECTED", "heartbeats resumed")
            except Conflict as exc:
                log.warning("node %s not marked back yet: %s", node_id, exc)
                return
            self.events.node_ready(node_id)
        elif back:
            self.events.node_ready(node_id)
        if not self._leading():
            return
        if roomier:  # room a job may be waiting for, beyond what a report already freed
            self.events.room_freed(node_id)
        unwanted = self._unwanted(running, node_id, now)
        # Offered long ago, not by this orchestrator, and still not running there: the offer
        # was lost, e.g. when an orchestrator died mid-bid (see `_offered`).
        forgotten = [
            e.id
            for e in self._mirror.live_on(node_id)
            if e.compute_state in ("offered", "accepted")
            and e.id not in running
            and e.id not in self._offered
            and now - e.created_at > self.forget_after
        ]
        if unwanted or forgotten:
            why = f"node {node_id} never ran it: an offer no orchestrator saw through"
            self.events.strays(node_id, unwanted + forgotten, why)

    # ---- liveness sweep ------------------------------------------------------------------------

    async def sweep_forever(self) -> None:
        interval = min(self.heartbeat_interval, self.disconnect_timeout / 4)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sweep(time.time())
            except ShoalError as exc:
                log.warning("liveness sweep: %s", exc)

    async def sweep(self, now: float) -> None:
        """Mark nodes silent for the disconnect timeout DISCONNECTED, and remove those
        DISCONNECTED for `gc_after`."""
        self._forget_settled_offers(now)
        for node_id, versioned in list(self._mirror.nodes.items()):
            record = versioned.value
            if record.connection != "CONNECTED":
                if collectable(record, now, self.gc_after):
                    await self._collect(node_id, now)
                continue
            live = self._live.get(node_id)
            if live is None:
                self._live[node_id] = Liveness(now, record.info.capacity)
                self._dirty.add(node_id)
                continue
            if now - live.last_seen > self.disconnect_timeout:
                silent = now - live.last_seen
                try:
                    await self._transition(
                        node_id, "DISCONNECTED", f"no heartbeat for {silent:.1f}s"
                    )
                except Conflict as exc:
                    log.warning("node %s not marked lost yet: %s", node_id, exc)
                    continue
                live.reserved.clear()
                self._dirty.add(node_id)
                self.events.node_lost(node_id)

    def _forget_settled_offers(self, now: float) -> None:
        """Drop offers made here whose execution is over or gone without a `release` (ended
        by another orchestrator's write, or deleted): only a live one needs remembering.
        At most once every `forget_after`: a big plan keeps tens of thousands in flight."""
        if now - self._offers_pruned_at < self.forget_after:
            return
        self._offers_pruned_at = now
        executions = self._mirror.executions
        for exec_id, at in list(self._offered.items()):
            if now - at < self.forget_after:
                continue
            known = executions.get(exec_id)
            if known is None or not known.value.live:
                del self._offered[exec_id]

    async def _collect(self, node_id: str, now: float) -> None:
        def keep(record: wire.NodeRecord) -> str:
            return "" if collectable(record, now, self.gc_after) else "it changed meanwhile"

        try:
            await self.remove(node_id, keep=keep)
        except ShoalError as exc:  # back meanwhile, or removed by someone else
            log.debug("node %s not collected: %s", node_id, exc)
            return
        log.info("node %s removed: disconnected for over %.0fs", node_id, self.gc_after)

    async def _transition(self, node_id: str, connection: wire.Connection, why: str) -> None:
        await self._records.transition(node_id, connection, why)

    async def set_flags(
        self, node_id: str, *, approval: wire.Approval | None = None, drain: bool | None = None
    ) -> wire.NodeRecord:
        record = await self._records.set_flags(node_id, approval=approval, drain=drain)
        self.events.node_ready(node_id)
        return record

    async def remove(
        self, node_id: str, *, keep: Callable[[wire.NodeRecord], str] | None = None
    ) -> wire.NodeRecord:
        """Forget a node: its KV record (CAS on the revision held) and its liveness. By
        default only a DISCONNECTED node (`Conflict` for a connected one): a node whose agent
        still runs would be back at its next hello, approved and undrained afresh. Jobs still
        counting executions there are evaluated (those are lost; they were marked so when the
        node was). A node that comes back registers anew at its next hello (within 30 s)."""
        async with self._lock:  # not between a hello's read and write of this node's record
            record = await self._records.remove(node_id, keep or why_kept)
        self._live.pop(node_id, None)
        self._dirty.add(node_id)
        self.events.node_lost(node_id)
        return record
