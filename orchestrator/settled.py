"""Settled jobs: an ended job the mirror holds as its record without spec or executions.

A job that has ended and has no live execution is settled by the leader (settling.py), which
writes the current version's execution counts into its record. Every mirror then keeps only
that record, trimmed: its spec and executions stay in KV and are read when a describe, a
rerun or a purge asks. This is what keeps an orchestrator's memory flat over months of
finished jobs, and what lets a restart skip their executions.
"""

from __future__ import annotations

import sys

import msgspec

from shared import wire
from shared.views import spec_count

# Distinct values shared among trimmed records (most settled jobs end with the same counts and
# message); bounded, so that a stream of unique messages cannot grow it without end.
_SHARED_MAX = 4096


def is_settled(record: wire.JobRecord) -> bool:
    """Whether the mirror holds this record trimmed: it has ended and carries its counts."""
    return record.settled is not None and record.state in wire.TERMINAL_JOB_STATES


class Trimmer:
    """Makes the small copy of a settled job's record the mirror keeps."""

    def __init__(self) -> None:
        self._counts: dict[tuple[tuple[str, int], ...], dict[str, int]] = {}
        self._messages: dict[str, str] = {}
        self._specs: dict[int | None, msgspec.Raw] = {None: wire.NULL}

    def trim(self, record: wire.JobRecord) -> wire.JobRecord:
        counts = record.settled or {}
        key = tuple(sorted(counts.items()))
        shared_counts = self._counts.get(key)
        if shared_counts is None:
            shared_counts = counts
            if len(self._counts) < _SHARED_MAX:
                self._counts[key] = counts
        message = self._messages.get(record.state_message)
        if message is None:
            message = record.state_message
            if len(self._messages) < _SHARED_MAX:
                self._messages[message] = message
        # Of its spec, only what a list view shows: its Count.
        count = spec_count(record.spec)
        spec = self._specs.get(count)
        if spec is None and count is not None:
            spec = msgspec.Raw(b'{"Count":%d}' % count)
            if len(self._specs) < _SHARED_MAX:
                self._specs[count] = spec
        return msgspec.structs.replace(
            record,
            spec=spec or wire.NULL,
            name=record.id if record.name == record.id else record.name,
            namespace=sys.intern(record.namespace),
            type=sys.intern(record.type),
            state_message=message,
            settled=shared_counts,
        )
