"""Settled jobs in memory: what the mirror keeps of one, and when the settler takes a job."""

from __future__ import annotations

import msgspec

from orchestrator.mirror_records import MirrorRecords
from orchestrator.settled import Trimmer, is_settled
from orchestrator.settling import Settler
from orchestrator.state import StateMirror
from shared import wire
from shared.views import current_counts, listed_view
from tests.records import COMPLETED, JOB, RUNNING

SPEC = msgspec.Raw(b'{"Type": "batch", "Count": 2, "Tasks": [{"Engine": {"Type": "noop"}}]}')
ENDED = msgspec.structs.replace(
    JOB, spec=SPEC, state="Completed", state_message="all done", updated_at=10.0
)


class Unsettled(MirrorRecords):
    def __init__(self) -> None:
        super().__init__()
        self.unsettled: list[str] = []

    def _unsettled(self, record: wire.JobRecord) -> None:
        self.unsettled.append(record.id)


def test_a_record_is_settled_once_it_has_ended_and_carries_its_counts() -> None:
    assert not is_settled(ENDED)
    assert is_settled(msgspec.structs.replace(ENDED, settled={}))
    running = msgspec.structs.replace(ENDED, state="Running", settled={"running": 1})
    assert not is_settled(running)  # a stale count on a job that runs again


def test_the_trimmed_record_keeps_what_a_list_shows_and_shares_equal_values() -> None:
    trimmer = Trimmer()
    one = trimmer.trim(msgspec.structs.replace(ENDED, settled={"completed": 2}))
    two = trimmer.trim(
        msgspec.structs.replace(ENDED, id="j-2", name="j-2", settled={"completed": 2})
    )
    assert bytes(one.spec) == b'{"Count":2}' and one.spec is two.spec
    assert one.settled is two.settled and one.state_message is two.state_message
    assert one.name is one.id  # an unnamed job's name is its id: one string
    view = listed_view(one, [])
    assert view.count == 2 and view.execution_counts == {"completed": 2}
    assert view.executions == [] and bytes(view.spec) == b"null"
    no_count = trimmer.trim(msgspec.structs.replace(ENDED, spec=wire.NULL, settled={}))
    assert bytes(no_count.spec) == b"null"


def test_showing_a_settled_record_forgets_the_jobs_executions() -> None:
    mirror = Unsettled()
    mirror.show_job(ENDED, 1)
    mirror.show_execution(COMPLETED, 2)
    assert mirror.ended == {JOB.id}
    mirror.show_job(msgspec.structs.replace(ENDED, settled={"completed": 1}), 3)
    assert mirror.job(JOB.id) is None and JOB.id in mirror.settled
    held = mirror.held(JOB.id)
    assert held is not None and held.revision == 3
    assert mirror.executions == {} and mirror.executions_of(JOB.id) == []
    assert mirror.ended == set() and mirror.by_name[("default", JOB.name)] == JOB.id
    assert [j.id for j in mirror.newest_jobs()] == [JOB.id]

    rerun = msgspec.structs.replace(ENDED, version=2, state="Pending", settled=None)
    mirror.show_job(rerun, 4)
    assert JOB.id not in mirror.settled and mirror.job(JOB.id) == rerun
    assert mirror.unsettled == [JOB.id]  # its executions are read back
    mirror.drop_job(JOB.id)
    assert mirror.held(JOB.id) is None and list(mirror.newest_jobs()) == []


def test_the_settler_waits_for_the_quiet_and_for_every_execution_to_end() -> None:
    mirror = StateMirror(buckets=None)  # type: ignore[arg-type]  # (no I/O in due())
    settler = Settler(mirror, after=1.0)
    mirror.show_job(ENDED, 1)
    mirror.show_execution(RUNNING, 2)  # a stop on its way to the node
    assert settler.due(now=100.0) == []
    mirror.show_execution(COMPLETED, 3)
    assert settler.due(now=ENDED.updated_at + 0.5) == []  # ended a moment ago
    assert settler.due(now=100.0) == [ENDED]
    assert current_counts(ENDED, mirror.executions_of(JOB.id)) == {"completed": 1}
    mirror.show_job(msgspec.structs.replace(ENDED, settled={"completed": 1}), 4)
    assert settler.due(now=100.0) == []


def test_a_job_shown_before_it_is_stored_is_not_settled() -> None:
    mirror = StateMirror(buckets=None)  # type: ignore[arg-type]
    mirror.show_job(msgspec.structs.replace(ENDED, settled={}), 0)  # a create in flight
    assert JOB.id in mirror.jobs and not mirror.settled
    assert Settler(mirror).due(now=100.0) == []


def test_no_id_of_a_dropped_job_stays_in_the_indexes() -> None:
    # What a purge leaves must hold nothing of the purged jobs: a few hundred of their ids
    # left in the list index, spread over the heap, kept megabytes from being given back.
    mirror = Unsettled()
    for i in range(10):
        job = msgspec.structs.replace(ENDED, id=f"j-{i}", name=f"j-{i}", settled={})
        mirror.show_job(job, i + 1)
    for i in range(10):
        mirror.drop_job(f"j-{i}")
    mirror.compact()
    assert mirror._by_created == [] and mirror._listed == {} and mirror.by_name == {}
    assert mirror.settled == {} and list(mirror.newest_jobs()) == []
