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

# What belongs to one namespace (a tenant) is on subjects under `shoal.v1.ns.<namespace>.`:
# its API verbs, its jobs' stored state, events and logs. NATS permissions on that prefix are
# what keeps one tenant's users out of another's jobs (docs/security.md).
NS_PREFIX = f"{PREFIX}.ns"

# Wildcards the streams capture
EVENTS_SUBJECTS = f"{NS_PREFIX}.*.events.>"
LOGS_SUBJECTS = f"{NS_PREFIX}.*.logs.>"
UPDATES_SUBJECTS = f"{PREFIX}.node.*.update"
EVALS_SUBJECTS = f"{PREFIX}.evals.>"
STATE_SUBJECTS = f"{NS_PREFIX}.*.state.>"

# The server republishes every job and execution record it stores (never a refused CAS) to
# `shoal.v1.ns.<namespace>.state.<job-id>.job` and `.execution.<execution-id>`: one
# subscription follows a job's stored state without a consumer, and `ShoalClient.run()` ends
# on it. The keys carry the namespace for this: `<namespace>.<job-id>` and
# `<namespace>.<job-id>.<execution-id>`. (source, destination)
JOBS_REPUBLISH = (
    f"$KV.{JOBS_BUCKET}.*.*",
    f"{NS_PREFIX}.{{{{wildcard(1)}}}}.state.{{{{wildcard(2)}}}}.job",
)
EXECUTIONS_REPUBLISH = (
    f"$KV.{EXECUTIONS_BUCKET}.*.*.*",
    f"{NS_PREFIX}.{{{{wildcard(1)}}}}.state.{{{{wildcard(2)}}}}.execution.{{{{wildcard(3)}}}}",
)

# Cluster verbs (nodes; jobs of every namespace, for admins): `shoal.v1.api.<verb>`.
# A namespace's verbs: `shoal.v1.ns.<namespace>.api.<verb>` (`ns_api`).
API_PREFIX = f"{PREFIX}.api"
NS_API_SUBJECTS = f"{NS_PREFIX}.*.api.>"
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
    "job.purge",
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


def ns_api(namespace: str, verb: str) -> str:
    """A verb about the jobs (or secrets) of one namespace."""
    return f"{NS_PREFIX}.{namespace}.api.{verb}"


def api_scope(subject: str) -> tuple[str | None, str]:
    """(namespace, verb) of an API request's subject; namespace None on a cluster verb's."""
    if subject.startswith(f"{API_PREFIX}."):
        return None, subject[len(API_PREFIX) + 1 :]
    tokens = subject.split(".", 5)  # shoal.v1.ns.<namespace>.api.<verb>
    if len(tokens) == 6 and tokens[2] == "ns" and tokens[4] == "api":
        return tokens[3], tokens[5]
    raise ValueError(f"{subject!r} is not an API subject")


def identity_token(name: str) -> str:
    """The subject token of an identity (a node, a user, an orchestrator): its inbox is
    `_INBOX.<token>.>`."""
    return node_id_from(name)


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


def events(namespace: str, job_id: str) -> str:
    return f"{NS_PREFIX}.{namespace}.events.{job_id}"


def state_of_job(namespace: str, job_id: str) -> str:
    """Every stored write of the job's record and of its executions' records."""
    return f"{NS_PREFIX}.{namespace}.state.{job_id}.>"


def evaluation(job_id: str) -> str:
    return f"{PREFIX}.evals.{job_id}"


def logs(namespace: str, job_id: str, node_id: str, execution_id: str, stream: str) -> str:
    """One stream (stdout, stderr) of an execution's output. The node is in the subject so
    that a node's identity may write only lines of executions it names itself as running, and
    readers take an execution's lines only from the node it was placed on."""
    return f"{NS_PREFIX}.{namespace}.logs.{job_id}.{node_id}.{execution_id}.{stream}"


def logs_of_job(namespace: str, job_id: str) -> str:
    return f"{NS_PREFIX}.{namespace}.logs.{job_id}.>"


def log_parts(subject: str) -> tuple[str, str, str] | None:
    """(node id, execution id, stream) of a `logs` subject; None for anything else."""
    tokens = subject.split(".")
    if len(tokens) != 9 or tokens[2] != "ns" or tokens[4] != "logs":
        return None
    return tokens[6], tokens[7], tokens[8]


def job_key(namespace: str, job_id: str) -> str:
    return f"{namespace}.{job_id}"


def execution_key(namespace: str, job_id: str, execution_id: str) -> str:
    return f"{namespace}.{job_id}.{execution_id}"


ALL_HELLOS = f"{PREFIX}.node.*.hello"
ALL_HEARTBEATS = f"{PREFIX}.node.*.heartbeat"


def node_of(subject: str) -> str:
    """The node id token of a `shoal.v1.node.<id>.<kind>` subject."""
    return subject.split(".")[3]
