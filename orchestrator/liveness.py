"""What the registry knows of a node between its KV writes (its liveness, from heartbeats),
and what it tells the evaluation rules about nodes (`NodeEvents`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from shared import wire


@dataclass(slots=True)
class Liveness:
    """What heartbeats tell us; never written to KV."""

    last_seen: float
    free: wire.Capacity
    running: frozenset[str] = frozenset()
    boot_id: str = ""
    reserved: dict[str, tuple[wire.Capacity, float]] = field(default_factory=dict)
    # Its last bid found nobody listening (an agent stopping, not started yet, or reconnecting
    # to another server): no work until it is heard again, by heartbeat or hello.
    deaf: bool = False


class NodeEvents(Protocol):
    """What the registry tells the orchestrator (`EvaluationRules`) about nodes: one joined,
    came back, restarted or changed (`node_ready`); went silent for the disconnect timeout
    (`node_lost`); shows more room than its last heartbeat (`room_freed`); runs executions not
    wanted there, or no longer runs ones live there (`strays`)."""

    def node_ready(self, node_id: str) -> None: ...
    def node_lost(self, node_id: str) -> None: ...
    def room_freed(self, node_id: str) -> None: ...
    def strays(self, node_id: str, execution_ids: list[str], why: str) -> None: ...


class Unheard:
    """NodeEvents until the registry is wired: nothing reacts."""

    def node_ready(self, node_id: str) -> None: ...
    def node_lost(self, node_id: str) -> None: ...
    def room_freed(self, node_id: str) -> None: ...
    def strays(self, node_id: str, execution_ids: list[str], why: str) -> None: ...
