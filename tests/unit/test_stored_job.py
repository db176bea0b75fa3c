"""StoredJob: a job's view assembled from the records the server republishes."""

from __future__ import annotations

import json

import msgspec

from shared import wire
from shared.bus import Message
from shared.views import StoredJob, job_view

JOB = "j-1"
SPEC = msgspec.Raw(json.dumps({"Type": "batch", "Count": 2}).encode())


def job(state: str = "Pending", version: int = 1) -> Message:
    record = wire.JobRecord(
        id=JOB, name=JOB, namespace="default", type="batch", spec=SPEC, state=state,
        version=version,
    )  # fmt: skip
    return Message(f"shoal.v1.ns.default.state.{JOB}.job", wire.encode(record), "", None)


def execution(eid: str, state: str, version: int = 1, created: float = 1.0) -> Message:
    record = wire.ExecutionRecord(
        id=eid, job_id=JOB, namespace="default", node_id="n", compute_state=state,
        job_version=version, created_at=created,
    )  # fmt: skip
    return Message(
        f"shoal.v1.ns.default.state.{JOB}.execution.{eid}", wire.encode(record), "", None
    )


def test_not_ended_until_the_job_record_says_so() -> None:
    stored = StoredJob(JOB)
    assert stored.ended() is None
    stored.add(job())
    stored.add(execution("e-1", "completed"))
    assert stored.ended() is None


def test_an_ended_job_waits_for_its_executions_records() -> None:
    """The two streams republish independently: the job's end may arrive first."""
    stored = StoredJob(JOB)
    stored.add(job())
    stored.add(execution("e-2", "running", created=2.0))
    stored.add(execution("e-1", "running", created=1.0))
    stored.add(job("Completed"))
    assert stored.ended() is None
    stored.add(execution("e-1", "completed", created=1.0))
    assert stored.ended() is None
    stored.add(execution("e-2", "completed", created=2.0))
    view = stored.ended()
    assert view is not None and view.state == "Completed" and view.count == 2
    assert [e.id for e in view.executions] == ["e-1", "e-2"]  # oldest first, as the API
    assert bytes(view.spec) == bytes(SPEC)


def test_a_deleted_execution_is_forgotten() -> None:
    stored = StoredJob(JOB)
    stored.add(execution("e-1", "offered"))
    deleted = Message(
        f"shoal.v1.ns.default.state.{JOB}.execution.e-1", b"", "", {"KV-Operation": "DEL"}
    )
    stored.add(deleted)
    stored.add(job("Failed"))
    view = stored.ended()
    assert view is not None and view.executions == []


def test_executions_of_an_older_version_neither_block_nor_show() -> None:
    stored = StoredJob(JOB)
    stored.add(execution("e-old", "running", version=1))
    stored.add(execution("e-new", "failed", version=2))
    stored.add(job("Failed", version=2))
    view = stored.ended()
    assert view is not None and [e.id for e in view.executions] == ["e-new"]


def test_other_jobs_and_unreadable_messages_are_ignored() -> None:
    stored = StoredJob(JOB)
    stored.add(job())
    for msg in (
        Message(f"shoal.v1.ns.default.state.{JOB}.job", b"{not json", "", None),
        Message(f"shoal.v1.ns.default.state.{JOB}.job", b'{"ID": 5}', "", None),
        Message(f"shoal.v1.ns.default.state.{JOB}.execution.e-1", b"[]", "", None),
        Message(f"shoal.v1.ns.default.state.{JOB}.other", b"{}", "", None),
        Message("shoal.v1.ns.default.state.j-2.job", job("Completed").data, "", None),
        Message(f"shoal.v1.ns.default.state.{JOB}", b"{}", "", None),
    ):
        stored.add(msg)
    assert stored.job is not None and stored.job.state == "Pending"
    assert stored.executions == {}
    assert stored.ended() is None


def test_a_record_of_another_job_or_execution_than_its_subject_names_is_ignored() -> None:
    stored = StoredJob(JOB)
    stored.add(job())
    other = wire.JobRecord(
        id="j-2", name="j-2", namespace="default", type="batch", spec=SPEC, state="Completed"
    )
    stored.add(Message(f"shoal.v1.ns.default.state.{JOB}.job", wire.encode(other), "", None))
    misnamed = execution("e-1", "completed")
    stored.add(Message(f"shoal.v1.ns.default.state.{JOB}.execution.e-9", misnamed.data, "", None))
    foreign = wire.ExecutionRecord(id="e-3", job_id="j-2", namespace="default", node_id="n")
    stored.add(
        Message(f"shoal.v1.ns.default.state.{JOB}.execution.e-3", wire.encode(foreign), "", None)
    )
    assert stored.job is not None and stored.job.state == "Pending"
    assert stored.executions == {}


def test_the_view_shows_the_specs_count_and_none_for_anything_else() -> None:
    stored = StoredJob(JOB)
    stored.add(job("Completed"))
    view = stored.ended()
    assert view is not None and view.count == 2
    for spec in (b'{"Type": "batch"}', b'{"Count": "2"}', b'{"Count": true}', b"[2]"):
        record = wire.JobRecord(
            id=JOB, name=JOB, namespace="default", type="batch", spec=msgspec.Raw(spec),
            state="Completed",
        )  # fmt: skip
        assert job_view(record, []).count is None
