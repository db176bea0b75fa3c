"""The NATS permissions of each Shoal role, and the `users.conf` blocks that carry them."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from shared import subjects

P = subjects.PREFIX
NS = f"{P}.ns"  # what belongs to one namespace: shoal.v1.ns.<namespace>.{api,state,events,logs}
DEFAULT_NAMESPACE = "default"
NODE_RESULTS = "shoal-results-node-"  # + node id: the object store a node writes its results to
NS_RESULTS = "shoal-results-ns-"  # + namespace: where the orchestrator copies them, users read
SECRETS_BUCKET = "shoal-secrets"  # orchestrator/secrets.py's: values encrypted, orchestrators only
BUCKETS = (
    subjects.JOBS_BUCKET,
    subjects.JOB_VERSIONS_BUCKET,
    subjects.EXECUTIONS_BUCKET,
    subjects.NODES_BUCKET,
    subjects.LEADER_BUCKET,
    SECRETS_BUCKET,
)
ROLES = ("orchestrator", "compute", "user", "admin")


def identity_token(name: str) -> str:
    """The subject token of an identity name (its inbox is `_INBOX.<token>`)."""
    return subjects.node_id_from(name)


def inbox_prefix(name: str) -> str:
    return f"_INBOX.{identity_token(name)}"


def _own_inbox(name: str) -> str:
    return f"{inbox_prefix(name)}.>"


@dataclass(frozen=True, slots=True)
class Permissions:
    """What one identity may publish and subscribe to (everything else is denied)."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    allow_responses: bool = False


def orchestrator_permissions(name: str) -> Permissions:
    """All of Shoal's subjects, the JetStream API, its KV buckets and every object store;
    answers to anyone's inbox, listens only on its own."""
    return Permissions(
        publish=(
            f"{P}.>",
            "$JS.API.>",
            *(f"$KV.{b}.>" for b in BUCKETS),
            "$O.>",  # reads nodes' result buckets, writes the namespaces' ones
            "$JS.ACK.>",
            "$JS.FC.>",
            "_INBOX.>",  # replies to every identity's requests
        ),
        subscribe=(f"{P}.>", _own_inbox(name)),
    )


def compute_permissions(node: str, name: str | None = None) -> Permissions:
    """Its own node subjects, log lines naming itself, its own results bucket; replies only
    to requests it was sent.

    `node` is the node id (`subjects.node_id_from` of the node's name, which is `name`)."""
    subjects.check_token(node, "node id")
    stream = f"OBJ_{NODE_RESULTS}{node}"
    return Permissions(
        publish=(
            f"{P}.node.{node}.>",
            # shoal.v1.ns.<namespace>.logs.<job>.<node>.<execution>.<stream>: only as itself
            f"{NS}.*.logs.*.{node}.>",
            # Its own results bucket: create it, look it up, check whether a name exists,
            # replace an object (purge the old chunks), then publish chunks and metadata.
            f"$JS.API.STREAM.CREATE.{stream}",
            f"$JS.API.STREAM.INFO.{stream}",
            f"$JS.API.STREAM.UPDATE.{stream}",
            f"$JS.API.STREAM.PURGE.{stream}",
            f"$JS.API.STREAM.MSG.GET.{stream}",
            f"$JS.API.DIRECT.GET.{stream}.>",
            f"$O.{NODE_RESULTS}{node}.>",
        ),
        subscribe=(f"{P}.compute.{node}.>", f"_INBOX.{node}.>"),
        allow_responses=True,
    )


def _read_logs(filters: Iterable[str]) -> list[str]:
    """Ordered consumers on SHOAL_LOGS, created by name with their filter in the subject
    (`$JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>`): the server refuses a filter in the
    request that differs from the subject's. No message gets: they would read any subject."""
    s = subjects.LOGS_STREAM
    return [
        f"$JS.API.STREAM.INFO.{s}",
        *(f"$JS.API.CONSUMER.CREATE.{s}.*.{f}" for f in filters),
        f"$JS.API.CONSUMER.DELETE.{s}.*",
        f"$JS.FC.{s}.>",
    ]


def _read_objects(stream: str) -> list[str]:
    """Reading an object store: info, message gets, ordered consumers and flow control."""
    return [
        f"$JS.API.STREAM.INFO.{stream}",
        f"$JS.API.STREAM.MSG.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}.>",
        f"$JS.API.CONSUMER.CREATE.{stream}",
        f"$JS.API.CONSUMER.CREATE.{stream}.>",
        f"$JS.API.CONSUMER.DELETE.{stream}.>",
        f"$JS.FC.{stream}.>",
    ]


def user_permissions(name: str, namespaces: Sequence[str]) -> Permissions:
    """Requests, stored state, events, logs and results of its namespaces; the node list.
    Never a write to state, never another namespace."""
    if not namespaces:
        raise ValueError(f"user {name!r} needs at least one namespace")
    publish: list[str] = [f"{P}.api.node.list", f"{P}.api.node.describe", "$JS.API.STREAM.NAMES"]
    subscribe: list[str] = []
    for ns in namespaces:
        subjects.check_token(ns, "namespace")
        publish += [f"{NS}.{ns}.api.>", *_read_objects(f"OBJ_{NS_RESULTS}{ns}")]
        subscribe += [f"{NS}.{ns}.state.>", f"{NS}.{ns}.events.>"]
    publish += _read_logs(f"{NS}.{ns}.logs.>" for ns in namespaces)
    return Permissions(publish=tuple(publish), subscribe=(*subscribe, _own_inbox(name)))


def admin_permissions(name: str) -> Permissions:
    """Every namespace's verbs, state, events, logs and results, and the cluster verbs
    (nodes; jobs of all namespaces); still no write to state."""
    return Permissions(
        publish=(
            f"{NS}.*.api.>",
            f"{P}.api.>",
            f"{P}.compute.*.results",  # results kept by a node's `local` publisher
            "$JS.API.STREAM.NAMES",
            "$JS.API.STREAM.INFO.*",
            "$JS.API.STREAM.MSG.GET.*",
            "$JS.API.DIRECT.GET.>",
            "$JS.API.CONSUMER.CREATE.>",
            "$JS.API.CONSUMER.DELETE.>",
            "$JS.FC.>",
        ),
        subscribe=(f"{NS}.*.state.>", f"{NS}.*.events.>", _own_inbox(name)),
    )


@dataclass(frozen=True, slots=True)
class Identity:
    """A NATS user: its name, role, password and permissions.

    A compute identity is named after the node as given (`ip-10-0-0-1.ec2.internal`, so the
    DaemonSet finds `$(NODE_NAME).creds`); its permissions use the node id derived from it.
    """

    name: str
    role: str
    password: str
    permissions: Permissions = field(repr=False)
    node_id: str = ""  # compute only
    namespaces: tuple[str, ...] = ()  # users only

    @property
    def token(self) -> str:
        return identity_token(self.name)

    @property
    def inbox_prefix(self) -> str:
        return inbox_prefix(self.name)


def password() -> str:
    return secrets.token_urlsafe(32)


def orchestrator(name: str) -> Identity:
    return Identity(name, "orchestrator", password(), orchestrator_permissions(name))


def compute(name: str) -> Identity:
    node_id = subjects.node_id_from(name)
    return Identity(name, "compute", password(), compute_permissions(node_id, name), node_id)


def user(name: str, namespaces: Sequence[str]) -> Identity:
    perms = user_permissions(name, namespaces)
    return Identity(name, "user", password(), perms, namespaces=tuple(namespaces))


def admin(name: str) -> Identity:
    return Identity(name, "admin", password(), admin_permissions(name))


def parse_user(spec: str) -> tuple[str, tuple[str, ...]]:
    """`alice`, `alice:team-a` or `carol:team-a+team-b` -> (name, namespaces)."""
    name, _, rest = spec.partition(":")
    namespaces = tuple(n.strip() for n in rest.split("+") if n.strip()) or (DEFAULT_NAMESPACE,)
    subjects.check_token(name.strip(), "user name")
    for ns in namespaces:
        subjects.check_token(ns, "namespace")
    return name.strip(), tuple(dict.fromkeys(namespaces))


# ---- users.conf: one block per identity between marker comments ---------------------------------

BEGIN = "# >>> shoal identity "
END = "# <<< shoal identity "
LAST = "# <<< end of shoal identities (`shoal auth add-user|add-node` insert above)"
_BLOCK = re.compile(
    r"^ *" + re.escape(BEGIN) + r"(?P<name>\S+) role=(?P<role>\w+)(?: namespaces=(?P<ns>\S+))?"
    r"(?: \(node id (?P<node>\S+)\))?$",
    re.MULTILINE,
)


def _q(value: str) -> str:
    """A quoted nats-server config string (JSON escaping is a subset it reads)."""
    return json.dumps(value)


def _list(items: Iterable[str]) -> str:
    return "[" + ", ".join(_q(i) for i in items) + "]"


def block(ident: Identity) -> str:
    """One identity's entry in `users = [...]`, between markers naming it."""
    perms = ident.permissions
    head = f"{BEGIN}{ident.name} role={ident.role}"
    if ident.namespaces:
        head += f" namespaces={','.join(ident.namespaces)}"
    role = ident.role
    if ident.node_id and ident.node_id != ident.name:
        head += f" (node id {ident.node_id})"
        role += f" (node id {ident.node_id})"
    lines = [
        f"    {head}",
        f"    # {role}",
        f"    {{user: {_q(ident.name)}, password: {_q(ident.password)}, permissions: {{",
        f"      publish: {{allow: {_list(perms.publish)}}}",
        f"      subscribe: {{allow: {_list(perms.subscribe)}}}",
    ]
    if perms.allow_responses:
        lines.append("      allow_responses: true")
    lines += ["    }}", f"    {END}{ident.name}"]
    return "\n".join(lines) + "\n"


def users_conf(ids: Sequence[Identity]) -> str:
    """The `authorization { users = [...] }` block, for `include` from a server config."""
    head = [
        "# Shoal users and per-role permissions, generated by `shoal auth init`. Keep secret.",
        "# `shoal auth add-user` and `shoal auth add-node` add blocks; edit nothing by hand.",
        "authorization {",
        "  users = [",
    ]
    return "\n".join(head) + "\n" + "".join(block(i) for i in ids) + f"    {LAST}\n  ]\n}}\n"


@dataclass(frozen=True, slots=True)
class Known:
    """An identity already in a users.conf, as its marker describes it."""

    name: str
    role: str
    namespaces: tuple[str, ...]


def known(conf: str) -> list[Known]:
    """The identities of a users.conf written by `shoal auth init` (by their markers)."""
    return [
        Known(m["name"], m["role"], tuple((m["ns"] or "").split(",")) if m["ns"] else ())
        for m in _BLOCK.finditer(conf)
    ]


def add_block(conf: str, ident: Identity, *, replace: bool = False) -> str:
    """`conf` with `ident`'s block added (or, with `replace`, put in place of its old one)."""
    if LAST not in conf:
        raise ValueError(
            "users.conf has no insertion marker: it was not written by this `shoal auth init`"
            " (run `shoal auth init --force` once to regenerate it)"
        )
    begin = re.compile(r"^ *" + re.escape(f"{BEGIN}{ident.name} ") + r".*$", re.MULTILINE)
    found = begin.search(conf)
    if found is not None:
        if not replace:
            raise ValueError(f"{ident.name!r} is already in users.conf (pass --force to replace)")
        end_marker = f"{END}{ident.name}\n"
        end = conf.index(end_marker, found.start()) + len(end_marker)
        start = conf.rfind("\n", 0, found.start()) + 1
        return conf[:start] + block(ident) + conf[end:]
    at = conf.index(LAST)
    at = conf.rfind("\n", 0, at) + 1
    return conf[:at] + block(ident) + conf[at:]


def check_distinct(names: Iterable[str]) -> None:
    """Identity names must be distinct, and so must their tokens (their inboxes): `a.b` and
    `a-b` would share `_INBOX.a-b`."""
    by_token: dict[str, str] = {}
    for name in names:
        token = identity_token(name)
        if token in by_token:
            other = by_token[token]
            if other == name:
                raise ValueError(f"{name!r} is named twice (each identity is a user)")
            raise ValueError(
                f"identity names {other!r} and {name!r} both become {token!r} (their inbox "
                f"would be the same, _INBOX.{token}); rename one"
            )
        by_token[token] = name
