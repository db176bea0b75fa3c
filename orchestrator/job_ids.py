"""Job ids and versions as the API makes them: a named job's id, a chosen id, a spec's bytes."""

from __future__ import annotations

import json
import uuid

from shared import wire
from shared.errors import Conflict, InvalidSpec
from shared.spec import JobSpec


def current_version(job: wire.JobRecord) -> wire.JobVersion:
    return wire.JobVersion(
        job_id=job.id, version=job.version, spec=job.spec, submitted_at=job.created_at
    )


def chosen_id(job_id: str) -> str:
    try:
        chosen = uuid.UUID(job_id.removeprefix("j-"))
    except ValueError:
        raise InvalidSpec(f"JobID {job_id!r} is not j-<uuid>") from None
    if chosen.version == 5:  # what named jobs' ids are made of (named_job_id)
        raise InvalidSpec(f"JobID {job_id!r} is a version-5 UUID, which is kept for named jobs")
    return f"j-{chosen}"


def resubmitted(job: wire.JobRecord, spec: JobSpec) -> wire.SubmitReply:
    """A submit naming the id of a job that exists: the same request again is answered as the
    first was; a different spec under a taken id is refused."""
    same = spec.model_copy(update={"id": job.id, "name": job.id})
    if job.namespace != spec.namespace or bytes(job.spec) != canonical(same):
        raise Conflict(f"JobID {job.id} is already used by another job")
    return wire.SubmitReply(
        job_id=job.id, version=1, changed=False, warnings=["already submitted with this JobID"]
    )


def canonical(spec: JobSpec) -> bytes:
    return json.dumps(spec.dump()).encode()


def named_job_id(namespace: str, name: str) -> str:
    """The id of the job called `name` in `namespace`: the same on every orchestrator."""
    return f"j-{uuid.uuid5(uuid.NAMESPACE_URL, f'shoal:{namespace}/{name}')}"
