# mypy: disable-error-code="misc"
"""Every message and stored record on NATS, as frozen msgspec Structs with PascalCase JSON keys."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, TypeVar

import msgspec

from shared.errors import InvalidSpec, Problem

if TYPE_CHECKING:
    from shared.spec import Resources

_UPPER = {"id", "cpu", "gpu", "url", "cid", "ttl", "rss"}


def _pascal(name: str) -> str:
    return "".join(p.upper() if p in _UPPER else p.capitalize() for p in name.split("_"))


class Wire(msgspec.Struct, frozen=True, kw_only=True, rename=_pascal, omit_defaults=True):
    """Base of every wire struct: immutable, PascalCase on the wire, defaults omitted."""


NULL = msgspec.Raw(b"null")

JobState = Literal["Pending", "Queued", "Running", "Completed", "Failed", "Stopped"]
TERMINAL_JOB_STATES: frozenset[str] = frozenset({"Completed", "Failed", "Stopped"})

DesiredState = Literal["running", "stopped"]
ComputeState = Literal[
    "offered",  # written before the bid is sent
    "accepted",  # the node took it
    "running",
    "completed",
    "failed",
    "cancelled",
    "rejected",  # the node declined the bid; never counts as an attempt
    "lost",  # the node went away or forgot it
]
TERMINAL_COMPUTE_STATES: frozenset[str] = frozenset(
    {"completed", "failed", "cancelled", "rejected", "lost"}
)
LIVE_COMPUTE_STATES: frozenset[str] = frozenset({"offered", "accepted", "running"})

Approval = Literal["APPROVED", "PENDING", "REJECTED"]
Connection = Literal["CONNECTED", "DISCONNECTED"]


# ---- nodes ---------------------------------------------------------------------------------


class Capacity(Wire):
    """A node's size, its room left, or what one execution holds: the one type for all
    three, so their arithmetic lives here. Execution slots are counted apart (a node knows how
    many run), so `minus` and `plus` leave `executions` as it is."""

    cpu_millis: int = 0
    memory_bytes: int = 0
    disk_bytes: int = 0
    gpus: int = 0
    executions: int = 0  # slots; 0 = unlimited

    def short_of(self, demand: Capacity) -> Literal["CPU", "memory", "GPUs"] | None:
        """The first resource `demand` asks more of than this holds, or None when it fits.
        Disk is not reserved: no engine limits a task's disk, so none is counted against it."""
        if demand.cpu_millis > self.cpu_millis:
            return "CPU"
        if demand.memory_bytes > self.memory_bytes:
            return "memory"
        if demand.gpus > self.gpus:
            return "GPUs"
        return None

    def fits(self, demand: Capacity) -> bool:
        return self.short_of(demand) is None

    def roomier_than(self, before: Capacity) -> bool:
        """Whether this has more of any resource, slots included, than `before`: room that a
        job waiting for a node may now fit in."""
        return (
            self.cpu_millis > before.cpu_millis
            or self.memory_bytes > before.memory_bytes
            or self.gpus > before.gpus
            or self.executions > before.executions
        )

    def minus(self, other: Capacity) -> Capacity:
        return Capacity(
            cpu_millis=self.cpu_millis - other.cpu_millis,
            memory_bytes=self.memory_bytes - other.memory_bytes,
            disk_bytes=self.disk_bytes - other.disk_bytes,
            gpus=self.gpus - other.gpus,
            executions=self.executions,
        )

    def plus(self, other: Capacity) -> Capacity:
        return Capacity(
            cpu_millis=self.cpu_millis + other.cpu_millis,
            memory_bytes=self.memory_bytes + other.memory_bytes,
            disk_bytes=self.disk_bytes + other.disk_bytes,
            gpus=self.gpus + other.gpus,
            executions=self.executions,
        )

    @classmethod
    def of(cls, r: Resources) -> Capacity:
        """What a task asking for these resources holds while it runs."""
        return cls(
            cpu_millis=r.cpu_millis,
            memory_bytes=r.memory_bytes,
            disk_bytes=r.disk_bytes,
            gpus=r.gpus,
        )


class NodeInfo(Wire):
    id: str
    labels: dict[str, str] = {}
    engines: list[str] = []
    publishers: list[str] = []
    sources: list[str] = []
    capacity: Capacity = Capacity()
    version: str = ""
    network: bool = True  # whether tasks may have network access here


class RunningExecution(Wire):
    id: str
    job_id: str
    state: ComputeState = "running"


class Hello(Wire):
    node: NodeInfo
    running: list[RunningExecution] = []
    boot_id: str = ""  # changes every process start: tells a restart from a reconnect
    # The node's X25519 public key (32 bytes, base64), that secrets are sealed for; omitted
    # by agents older than secrets, which are then given no work that needs one.
    public_key: str = ""


class HelloReply(Wire):
    approval: Approval
    heartbeat_interval: float
    cancel: list[str] = []  # executions the node reported that it must stop


class Heartbeat(Wire):
    node_id: str
    seq: int
    free: Capacity
    running: list[str] = []
    boot_id: str = ""
    sent_at: float = 0.0


class NodeRecord(Wire):
    """The `shoal-nodes` KV value: written on transitions, never on every heartbeat."""

    info: NodeInfo
    approval: Approval = "APPROVED"
    connection: Connection = "CONNECTED"
    drain: bool = False
    boot_id: str = ""
    first_seen: float = 0.0
    last_transition: float = 0.0
    message: str = ""
    public_key: str = ""  # from its last hello (Hello.PublicKey)


# ---- executions ----------------------------------------------------------------------------


class ResultRef(Wire):
    publisher: str  # nats | local | s3 | ipfs | noop
    location: str = ""  # object name, path, s3 URL or CID
    size: int = 0


class SealedEnv(Wire):
    """A secret the task's `Env` refers to (`Name: "secret:<Secret>"`), sealed for the node
    the order is sent to (shared/sealing.py: bound to the execution, the node and `Name`)."""

    name: str  # the environment variable
    secret: str  # the secret's name in the job's namespace
    sealed: str  # the sealed box, base64


class ExecutionOrder(Wire):
    """What a node is offered (bid) and, once accepted, runs."""

    execution_id: str
    job_id: str
    job_type: str
    namespace: str = "default"
    job_version: int = 1
    partition: int = 0
    attempt: int = 1
    spec: msgspec.Raw = msgspec.Raw(b"{}")  # the canonical JobSpec JSON
    secrets: list[SealedEnv] = []  # one per `secret:` reference of the task's Env


class ResultChunkRequest(Wire):
    execution_id: str
    offset: int = 0
    size: int = 512 * 1024


class BidReply(Wire):
    accepted: bool
    reason: str = ""
    busy: bool = False  # declined for want of room now, not for good: the job waits


class CancelCommand(Wire, tag="cancel", tag_field="Kind"):
    execution_id: str
    reason: str = ""


class RunCommand(Wire, tag="run", tag_field="Kind"):
    order: ExecutionOrder


Command = CancelCommand | RunCommand


class CommandAck(Wire):
    ok: bool
    message: str = ""


class ExecutionUpdate(Wire):
    """A compute-side state change, published durably to SHOAL_UPDATES."""

    execution_id: str
    job_id: str
    node_id: str
    state: ComputeState
    exit_code: int | None = None
    error: str = ""
    retryable: bool = True
    timed_out: bool = False
    result: ResultRef | None = None
    at: float = 0.0
    # On an outcome whose start was never reported (the task ended within the agent's
    # hold-back): when it started, so history still shows it running.
    started_at: float = 0.0


class ExecutionRecord(Wire):
    """The `shoal-executions` KV value."""

    id: str
    job_id: str
    namespace: str
    node_id: str
    job_version: int = 1
    partition: int = 0
    attempt: int = 1
    desired_state: DesiredState = "running"
    compute_state: ComputeState = "offered"
    exit_code: int | None = None
    error: str = ""
    retryable: bool = True
    result: ResultRef | None = None
    created_at: float = 0.0
    updated_at: float = 0.0

    @property
    def live(self) -> bool:
        return self.compute_state in LIVE_COMPUTE_STATES


# ---- jobs ----------------------------------------------------------------------------------


class JobRecord(Wire):
    """The `shoal-jobs` KV value: spec and state of one job."""

    id: str
    name: str
    namespace: str
    type: str
    spec: msgspec.Raw
    version: int = 1
    state: JobState = "Pending"
    state_message: str = ""
    priority: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0
    queued_since: float = 0.0
    max_attempts: int = 3
    # The current version's executions by compute state, written by the leader once the job
    # has ended and none of them is live (orchestrator/settling.py): a mirror then holds the
    # job without its spec or executions, and reads them from KV when asked.
    settled: dict[str, int] | None = None


class JobVersion(Wire):
    """The `shoal-job-versions` KV value (`<job-id>.<version>`): a spec a newer version
    replaced (the current one is in the job record)."""

    job_id: str
    version: int
    spec: msgspec.Raw
    submitted_at: float = 0.0


class VersionList(Wire):
    versions: list[JobVersion]


class JobEvent(Wire, omit_defaults=False):
    """One line of a job's history, on `shoal.v1.events.<job-id>`."""

    job_id: str
    at: float
    kind: str  # job | execution
    message: str
    state: str = ""
    previous_state: str = ""
    execution_id: str = ""
    node_id: str = ""
    # On the event that ends a job: the job as `job.describe` answers it (null when that would
    # exceed VIEW_LIMIT), so a waiting client needs no further request.
    view: msgspec.Raw = NULL


VIEW_LIMIT = 256 * 1024


class Evaluation(Wire):
    job_id: str
    namespace: str
    trigger: str
    priority: int = 0
    at: float = 0.0


# ---- API -----------------------------------------------------------------------------------


class ApiProblem(Wire):
    """One problem of an `invalid` request, and where it is (`Tasks[0].Resources.Memory`;
    empty for the request as a whole)."""

    message: str
    path: str = ""


class ApiError(Wire):
    code: str
    message: str
    problems: list[str] = []  # each problem as text, `path: message`
    details: list[ApiProblem] = []  # the same problems with their paths apart


class ApiReply(Wire):
    ok: bool
    error: ApiError | None = None
    data: msgspec.Raw = NULL


class SubmitRequest(Wire):
    """Either `spec` (the JobSpec as a JSON object) or `spec_text` (YAML/JSON, maybe templated).

    `job_id` (`j-<uuid>`, optional) is the id an unnamed job gets: a client that picks it can
    listen to the job's events before submitting, and resend the same request safely."""

    spec: msgspec.Raw = NULL
    spec_text: str = ""
    variables: dict[str, str] = {}
    force: bool = False
    job_id: str = ""


class SubmitReply(Wire):
    job_id: str
    version: int
    changed: bool = True
    warnings: list[str] = []


class JobRef(Wire):
    job_id: str
    namespace: str = ""
    version: int = 0  # 0 = the current version


class ListRequest(Wire):
    namespace: str = ""
    limit: int = 100
    states: list[str] = []
    # paging: node.list, the ids greater than this; job.list, the jobs after the page whose
    # `Next` this is (newest first)
    after: str = ""


class StopRequest(Wire):
    job_id: str
    reason: str = "stopped by user"


class ExecutionView(Wire, omit_defaults=False):
    id: str
    node_id: str
    partition: int
    attempt: int
    desired_state: str
    compute_state: str
    exit_code: int | None = None
    error: str = ""
    result: ResultRef | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    job_version: int = 0  # the job version it ran; 0 from an orchestrator that does not say


class JobView(Wire, omit_defaults=False):
    id: str
    name: str
    namespace: str
    type: str
    state: JobState
    state_message: str = ""
    version: int = 1
    priority: int = 0
    count: int | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    # The current version's executions: at most the newest VIEW_EXECUTIONS (1,000) of them,
    # oldest first (a daemon on 10,000 nodes would not fit in a NATS message), and how many
    # there are in each compute state, all of them counted.
    executions: list[ExecutionView] = []
    spec: msgspec.Raw = NULL
    execution_counts: dict[str, int] = {}

    @property
    def executions_total(self) -> int:
        return sum(self.execution_counts.values()) or len(self.executions)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_JOB_STATES


class JobList(Wire):
    jobs: list[JobView]
    next: str = ""  # more jobs follow: ask again with this as `After`


class ExecutionsRequest(Wire):
    """`job.executions`: a page of every version's executions, oldest first."""

    job_id: str
    namespace: str = ""
    offset: int = 0
    limit: int = 1000


class ExecutionList(Wire):
    executions: list[ExecutionView]
    total: int = 0  # of the job's executions, whatever the page


class HistoryRequest(Wire):
    """`job.history`: the job's events after stream sequence `After` (0: from the start), as
    many as fit in one answer, at most `Limit`."""

    job_id: str
    namespace: str = ""
    after: int = 0
    limit: int = 2000


class History(Wire):
    events: list[JobEvent]
    next: int = 0  # more may follow: ask again with After = Next


class NodeRef(Wire):
    node_id: str


class NodeView(Wire, omit_defaults=False):
    id: str
    labels: dict[str, str]
    connection: Connection
    approval: Approval
    engines: list[str]
    capacity: Capacity
    free: Capacity | None = None
    drain: bool = False
    running: list[str] = []
    last_seen: float = 0.0
    message: str = ""


class NodeList(Wire):
    nodes: list[NodeView]
    next: str = ""  # pass as ListRequest.After for the next page; empty when done


# ---- secrets -------------------------------------------------------------------------------


class SecretCreateRequest(Wire):
    """`secret.create`: `Update` replaces the value of an existing secret (else Conflict)."""

    name: str
    value: str
    namespace: str = ""
    update: bool = False


class SecretRef(Wire):
    """`secret.delete`."""

    name: str
    namespace: str = ""


class SecretListRequest(Wire):
    """`secret.list` (on the cluster subject, an empty Namespace lists every namespace)."""

    namespace: str = ""


class SecretView(Wire):
    """A secret as the API shows it: never its value."""

    name: str
    namespace: str
    created_at: float = 0.0
    updated_at: float = 0.0


class SecretList(Wire):
    secrets: list[SecretView]


class StoredSecret(Wire):
    """The `shoal-secrets` KV value (`<namespace>.<name>`): the value AES-GCM encrypted under
    the orchestrators' master key (`KeyID` names which), bound to the key it is stored under."""

    name: str
    namespace: str
    key_id: str
    ciphertext: str  # base64
    created_at: float = 0.0
    updated_at: float = 0.0


# ---- codec ---------------------------------------------------------------------------------

T = TypeVar("T")

_encoder = msgspec.json.Encoder()
_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


def encode(value: Any) -> bytes:
    return _encoder.encode(value)


def decode(data: bytes | bytearray | memoryview, kind: type[T], *, what: str = "") -> T:
    """Decode a message; a malformed one raises InvalidSpec saying which field is wrong."""
    decoder = _decoders.get(kind)
    if decoder is None:
        decoder = _decoders[kind] = msgspec.json.Decoder(kind)
    try:
        return decoder.decode(data)  # type: ignore[no-any-return]
    except msgspec.ValidationError as exc:
        raise InvalidSpec([Problem(what or kind.__name__, f"malformed message: {exc}")]) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise InvalidSpec([Problem(what or kind.__name__, f"not valid JSON: {exc}")]) from None
    except RecursionError:  # msgspec gives up near 1000 levels, even inside skipped fields
        raise InvalidSpec([Problem(what or kind.__name__, "JSON nested too deeply")]) from None


def decode_command(data: bytes) -> Command:
    return decode(data, Command, what="command")  # type: ignore[arg-type]
