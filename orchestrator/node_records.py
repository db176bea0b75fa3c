"""The node records' compare-and-swap writes: a hello's, connection changes, flags, removal.

Every write goes through `retry_cas`, decided again on the record as the mirror holds it
after each lost race; the registry acts on nothing these did not store.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import msgspec

from orchestrator.state import StateMirror, Versioned
from shared import wire
from shared.cas import retry_cas
from shared.errors import Conflict, NotFound

log = logging.getLogger(__name__)


class NodeRecords:
    def __init__(self, mirror: StateMirror, *, manual_approval: bool = False) -> None:
        self._mirror = mirror
        self.manual_approval = manual_approval

    async def hello(
        self, hello: wire.Hello, now: float
    ) -> tuple[Versioned[wire.NodeRecord] | None, wire.NodeRecord, bool]:
        """The node's record as it was known, as it is now, and whether it had to be written."""
        return await retry_cas(lambda: self._store_hello(hello, now), what=f"node {hello.node.id}")

    async def _store_hello(
        self, hello: wire.Hello, now: float
    ) -> tuple[Versioned[wire.NodeRecord] | None, wire.NodeRecord, bool]:
        known = self._mirror.nodes.get(hello.node.id)
        if known is None:  # new, or removed and back: registered afresh
            approval: wire.Approval = "PENDING" if self.manual_approval else "APPROVED"
            record = wire.NodeRecord(
                info=hello.node,
                approval=approval,
                boot_id=hello.boot_id,
                first_seen=now,
                last_transition=now,
                public_key=hello.public_key,
            )
        else:
            # The key as the node says it now: an agent older than secrets (none) is given
            # no secret, whatever an earlier agent of that name said.
            record = msgspec.structs.replace(
                known.value,
                info=hello.node,
                connection="CONNECTED",
                boot_id=hello.boot_id,
                public_key=hello.public_key,
            )
        changed = known is None or known.value != record
        if changed:  # KV only on a real change
            record = msgspec.structs.replace(record, last_transition=now)
            await self._mirror.put_node(record)
        return known, record, changed

    async def transition(self, node_id: str, connection: wire.Connection, why: str) -> None:
        """Store the node's new connection state; `Conflict` when it could not be stored, so
        the caller acts on nothing that is not recorded (the next sweep or heartbeat retries)."""

        async def store() -> None:
            known = self._mirror.nodes.get(node_id)
            if known is None or known.value.connection == connection:
                return
            record = msgspec.structs.replace(
                known.value, connection=connection, last_transition=time.time(), message=why
            )
            await self._mirror.put_node(record)
            log.info("node %s %s: %s", node_id, connection, why)

        await retry_cas(store, what=f"node {node_id}")

    async def set_flags(
        self, node_id: str, *, approval: wire.Approval | None, drain: bool | None
    ) -> wire.NodeRecord:
        async def store() -> wire.NodeRecord:
            known = self._mirror.nodes.get(node_id)
            if known is None:
                raise NotFound(f"node {node_id!r} is not registered")
            record = msgspec.structs.replace(
                known.value,
                approval=approval if approval is not None else known.value.approval,
                drain=drain if drain is not None else known.value.drain,
                last_transition=time.time(),
            )
            await self._mirror.put_node(record)
            return record

        return await retry_cas(store, what=f"node {node_id}")

    async def remove(self, node_id: str, keep: Callable[[wire.NodeRecord], str]) -> wire.NodeRecord:
        """Delete the node's record unless `keep` gives a reason not to (`Conflict` with it),
        decided on the record as it is at each attempt: a node that came back meanwhile is
        kept. `NotFound` if there is no record. Returns the record deleted."""

        async def attempt() -> tuple[wire.NodeRecord, str]:
            known = self._mirror.nodes.get(node_id)
            if known is None:
                raise NotFound(f"no node {node_id!r}")
            reason = keep(known.value)
            if not reason:
                await self._mirror.delete_node(node_id, known.revision)
            return known.value, reason

        record, reason = await retry_cas(attempt, what=f"node {node_id}")
        if reason:
            raise Conflict(reason)
        return record


def why_kept(record: wire.NodeRecord) -> str:
    """Why `node.remove` keeps a node: empty for a DISCONNECTED one. A node whose agent still
    runs would be back at its next hello, approved and undrained afresh."""
    if record.connection == "DISCONNECTED":
        return ""
    node_id = record.info.id
    return (
        f"node {node_id} is {record.connection}: stop its agent first (to move its work "
        f"elsewhere before that, drain it: shoal node drain {node_id}), then remove it once it "
        "shows DISCONNECTED, a disconnect timeout after its last heartbeat"
    )


def collectable(record: wire.NodeRecord, now: float, gc_after: float) -> bool:
    """Whether the liveness sweep removes the node: DISCONNECTED for `gc_after` seconds (0:
    never) since its last change (an approve or a drain counts), and not REJECTED: time must
    not undo that decision, and a node that registers afresh is approved again (unless the
    orchestrator runs with manual approval)."""
    return (
        gc_after > 0
        and record.connection == "DISCONNECTED"
        and record.approval != "REJECTED"
        and now - record.last_transition > gc_after
    )
