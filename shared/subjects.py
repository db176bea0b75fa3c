"""Every NATS subject, KV bucket, stream and object store name of the protocol."""

from __future__ import annotations

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
)

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def check_token(value: str, what: str = "id") -> str:
    """Ids become subject tokens: refuse `.`, `*`, `>`, whitespace and anything odd."""
    if not _TOKEN.match(value):
        raise ValueError(
            f"{what} {value!r} must be 1-128 characters of letters, digits, '_' or '-'"
        )
    return value


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
