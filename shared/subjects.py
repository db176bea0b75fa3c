"""Every NATS subject, KV bucket, stream and object store name of the protocol."""

from __future__ import annotations

import hashlib
import re

PREFIX = "shoal.v1"

# State (JetStream)
JOBS_BUCKET = "shoal-jobs"
JOB_VERSIONS_BUCKET = "shoal-job-versions"
EXECUTIONS_BUCKET = "shoal-executions"
NODES_BUCKET = "shoal-nodes"
LEADER_BUCKET = "shoal-leader"
RESULTS_STORE = "shoal-results"
EVENTS_STREAM = "SHOAL_EVENTS"
LOGS_STREAM = "SHOAL_LOGS"
UPDATES_STREAM = "SHOAL_UPDATES"
EVALS_STREAM = "SHOAL_EVALS"

# Wildcards the streams capture
EVENTS_SUBJECTS = f"{PREFIX}.events.>"
LOGS_SUBJECTS = f"{PREFIX}.logs.>"
UPDATES_SUBJECTS = f"{PREFIX}.node.*.update"
EVALS_SUBJECTS = f"{PREFIX}.evals.>"
STATE_SUBJECTS = f"{PREFIX}.state.>"

# The server republishes every job and execution record it stores (never a refused CAS) to
# `shoal.v1.state.<job-id>.job` and `.execution.<execution-id>`: one subscription follows a
# job's stored state without a consumer, and `ShoalClient.run()` ends on it. (source, dest)
JOBS_REPUBLISH = (f"$KV.{JOBS_BUCKET}.*.*", f"{PREFIX}.state.{{{{wildcard(2)}}}}.job")
EXECUTIONS_REPUBLISH = (
    f"$KV.{EXECUTIONS_BUCKET}.*.*",
    f"{PREFIX}.state.{{{{wildcard(1)}}}}.execution.{{{{wildcard(2)}}}}",
)

API_PREFIX = f"{PREFIX}.api"
API_QUEUE = "shoal-orchestrators"

API_VERBS = (
    "job.submit",
    "job.describe",
    "job.list",
    "job.stop",
    "job.executions",
    "job.history",
    "job.versions",
    "job.rerun",
    "node.list",
    "node.describe",
    "node.approve",
    "node.reject",
    "node.drain",
    "node.undrain",
    "node.remove",
)

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def check_token(value: str, what: str = "id") -> str:
    """Ids become subject tokens: refuse `.`, `*`, `>`, whitespace and anything odd."""
    if not _TOKEN.match(value):
        raise ValueError(
            f"{what} {value!r} must be 1-128 characters of letters, digits, '_' or '-'"
        )
    return value


_NOT_TOKEN = re.compile(r"[^A-Za-z0-9_-]")


def node_id_from(name: str) -> str:
    """The node id for a host or Kubernetes node name: every character outside letters,
    digits, '_' and '-' becomes '-' (`ip-10-0-0-1.ec2.internal` -> `ip-10-0-0-1-ec2-internal`).

    Deterministic, so `shoal compute --name` and `shoal auth init --nodes` agree on the id (and
    so on the subjects a node's identity may use). A name longer than a token allows keeps its
    first 119 characters and gets a hash of the whole name, so long names stay distinct.
    """
    if not name:
        raise ValueError("node name must not be empty")
    node_id = _NOT_TOKEN.sub("-", name)
    if len(node_id) > 128:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        node_id = f"{node_id[:119]}-{digest}"
    return check_token(node_id, "node id")


def api(verb: str) -> str:
    return f"{API_PREFIX}.{verb}"


def node_hello(node_id: str) -> str:
    return f"{PREFIX}.node.{node_id}.hello"


def node_heartbeat(node_id: str) -> str:
    return f"{PREFIX}.node.{node_id}.heartbeat"


def node_update(node_id: str) -> str:
    return f"{PREFIX}.node.{node_id}.update"


def compute_bid(node_id: str) -> str:
    return f"{PREFIX}.compute.{node_id}.bid"


def compute_cmd(node_id: str) -> str:
    return f"{PREFIX}.compute.{node_id}.cmd"


def compute_results(node_id: str) -> str:
    """Request-reply: a chunk of a result archive kept by the node's local publisher."""
    return f"{PREFIX}.compute.{node_id}.results"


def events(job_id: str) -> str:
    return f"{PREFIX}.events.{job_id}"


def state_of_job(job_id: str) -> str:
    """Every stored write of the job's record and of its executions' records."""
    return f"{PREFIX}.state.{job_id}.>"


def evaluation(job_id: str) -> str:
    return f"{PREFIX}.evals.{job_id}"


def logs(job_id: str, execution_id: str, stream: str) -> str:
    return f"{PREFIX}.logs.{job_id}.{execution_id}.{stream}"


def logs_of_job(job_id: str) -> str:
    return f"{PREFIX}.logs.{job_id}.>"


def job_key(namespace: str, job_id: str) -> str:
    return f"{namespace}.{job_id}"


def execution_key(job_id: str, execution_id: str) -> str:
    return f"{job_id}.{execution_id}"


ALL_HELLOS = f"{PREFIX}.node.*.hello"
ALL_HEARTBEATS = f"{PREFIX}.node.*.heartbeat"


def node_of(subject: str) -> str:
    """The node id token of a `shoal.v1.node.<id>.<kind>` subject."""
    return subject.split(".")[3]
