"""The API's node verbs: list, describe, approve, reject, drain, undrain and remove."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from orchestrator.liveness import Liveness
from orchestrator.registry import NodeRegistry
from orchestrator.state import StateMirror
from shared import wire
from shared.errors import NotFound

NODE_PAGE = 1000  # ~400 bytes a node: a page stays well under the 1 MB max payload


class NodeApi:
    def __init__(self, mirror: StateMirror, registry: NodeRegistry) -> None:
        self._mirror = mirror
        self._registry = registry

    def handlers(self) -> dict[str, Callable[[bytes], Awaitable[Any]]]:
        return {
            "node.list": self.node_list,
            "node.describe": self.node_describe,
            "node.approve": lambda data: self._node_flags(data, approval="APPROVED"),
            "node.reject": lambda data: self._node_flags(data, approval="REJECTED"),
            "node.drain": lambda data: self._node_flags(data, drain=True),
            "node.undrain": lambda data: self._node_flags(data, drain=False),
            "node.remove": self.node_remove,
        }

    def node_view(self, record: wire.NodeRecord, live: Liveness | None = None) -> wire.NodeView:
        """`live`: what heartbeats told (by default, as the registry holds it now)."""
        live = live or self._registry.liveness(record.info.id)
        return wire.NodeView(
            id=record.info.id,
            labels=record.info.labels,
            connection=record.connection,
            approval=record.approval,
            engines=record.info.engines,
            capacity=record.info.capacity,
            free=live.free if live else None,
            drain=record.drain,
            running=sorted(live.running) if live else [],
            last_seen=live.last_seen if live else 0.0,
            message=record.message,
        )

    def _node(self, ref: str) -> wire.NodeRecord:
        known = self._mirror.nodes.get(ref)
        if known is None:
            matches = [v for k, v in self._mirror.nodes.items() if k.startswith(ref)]
            if len(matches) != 1:
                raise NotFound(
                    f"no node {ref!r}" if not matches else f"{ref!r} matches {len(matches)} nodes"
                )
            known = matches[0]
        return known.value

    async def node_list(self, data: bytes) -> wire.NodeList:
        """One page (a reply must fit NATS's max payload): `Limit` nodes after `After`."""
        req = wire.decode(data, wire.ListRequest, what="node list request")
        limit = min(max(req.limit, 1), NODE_PAGE)
        ids = sorted(k for k in self._mirror.nodes if k > req.after)
        page = [self._mirror.nodes[k].value for k in ids[:limit]]
        more = ids[limit - 1] if len(ids) > limit else ""
        return wire.NodeList(nodes=[self.node_view(n) for n in page], next=more)

    async def node_describe(self, data: bytes) -> wire.NodeView:
        ref = wire.decode(data, wire.NodeRef, what="node request")
        return self.node_view(self._node(ref.node_id))

    async def _node_flags(
        self, data: bytes, *, approval: wire.Approval | None = None, drain: bool | None = None
    ) -> wire.NodeView:
        ref = wire.decode(data, wire.NodeRef, what="node request")
        node = self._node(ref.node_id)
        record = await self._registry.set_flags(node.info.id, approval=approval, drain=drain)
        return self.node_view(record)

    async def node_remove(self, data: bytes) -> wire.NodeView:
        """Forget a DISCONNECTED node (`conflict` for a connected one); the reply shows it as
        it was. Only a full id: a retried remove must not take a node the prefix now names."""
        ref = wire.decode(data, wire.NodeRef, what="node request")
        known = self._mirror.nodes.get(ref.node_id)
        if known is None:
            near = sorted(k for k in self._mirror.nodes if k.startswith(ref.node_id))[:3]
            hint = f" (node.remove takes a full node id: {', '.join(near)}?)" if near else ""
            raise NotFound(f"no node {ref.node_id!r}{hint}")
        live = self._registry.liveness(ref.node_id)  # gone with the node: last seen when
        return self.node_view(await self._registry.remove(ref.node_id), live)
