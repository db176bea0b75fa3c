"""Property tests over the wire types: valid messages round-trip, malformed ones are InvalidSpec,
and a live orchestrator fed hypothesis-generated messages on every API and node subject answers
or ignores them and keeps its state consistent."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec
import msgspec.inspect as mi
import nats
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from shared import subjects, wire
from shared.bus import Bus
from shared.errors import InvalidSpec, ShoalError
from shared.natsserver import EmbeddedNats
from tests.conftest import eventually
from tests.integration.stack import Stack, stack

# ---- strategies built from the structs' own type information -------------------------------

WIRE_TYPES: list[type[wire.Wire]] = sorted(
    (
        v
        for v in vars(wire).values()
        if isinstance(v, type) and issubclass(v, wire.Wire) and v is not wire.Wire
    ),
    key=lambda t: t.__name__,
)
# What `wire.decode` is asked to decode: every struct, and the tagged Command union.
DECODE_TARGETS: list[Any] = [*WIRE_TYPES, wire.Command]


def _name(kind: Any) -> str:
    return getattr(kind, "__name__", "Command")


ALL_KINDS: frozenset[str] = frozenset({"null", "bool", "int", "float", "str", "array", "object"})

INT64 = st.integers(-(2**63), 2**63 - 1)
FLOATS = st.floats(allow_nan=False, allow_infinity=False)


def json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list):
        return "array"
    return "object"


class Gen:
    """Strategies over one alphabet of strings (`text`), built once per wire type."""

    def __init__(
        self, text: st.SearchStrategy[str], raw: st.SearchStrategy[msgspec.Raw] | None = None
    ) -> None:
        self.text = text
        scalars = st.none() | st.booleans() | INT64 | FLOATS | text
        self.json: st.SearchStrategy[Any] = st.recursive(
            scalars,
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
            max_leaves=8,
        )
        self.raw = raw if raw is not None else self.json.map(_raw)
        self._kinds: dict[str, st.SearchStrategy[Any]] = {
            "null": st.none(),
            "bool": st.booleans(),
            "int": INT64,
            "float": FLOATS,
            "str": text,
            "array": st.lists(self.json, max_size=3),
            "object": st.dictionaries(text, self.json, max_size=3),
        }
        self._instances: dict[Any, st.SearchStrategy[Any]] = {}

    def of_kind(self, kind: str) -> st.SearchStrategy[Any]:
        """JSON values of one kind (`int`, `array`...)."""
        return self._kinds[kind]

    def instances(self, kind: Any) -> st.SearchStrategy[Any]:
        """Valid values of a wire type (a struct or a union of structs)."""
        if kind not in self._instances:
            self._instances[kind] = self.values_of(type_info(kind))
        return self._instances[kind]

    def values_of(self, t: mi.Type) -> st.SearchStrategy[Any]:
        """Valid Python values of a msgspec type, as the struct constructor takes them."""
        if isinstance(t, mi.StrType):
            return self.text
        if isinstance(t, mi.IntType):
            return INT64
        if isinstance(t, mi.FloatType):
            return FLOATS
        if isinstance(t, mi.BoolType):
            return st.booleans()
        if isinstance(t, mi.NoneType):
            return st.none()
        if isinstance(t, mi.LiteralType):
            return st.sampled_from(t.values)
        if isinstance(t, mi.RawType):
            return self.raw
        if isinstance(t, mi.ListType):
            return st.lists(self.values_of(t.item_type), max_size=3)
        if isinstance(t, mi.DictType):
            return st.dictionaries(
                self.values_of(t.key_type), self.values_of(t.value_type), max_size=3
            )
        if isinstance(t, mi.UnionType):
            return st.one_of(*(self.values_of(m) for m in t.types))
        if isinstance(t, mi.StructType):
            required = {f.name: self.values_of(f.type) for f in t.fields if f.required}
            optional = {f.name: self.values_of(f.type) for f in t.fields if not f.required}
            cls = t.cls
            return st.fixed_dictionaries(required, optional=optional).map(lambda kw: cls(**kw))
        raise AssertionError(f"no strategy for {t}: extend this test for the new wire type")


def _raw(value: Any) -> msgspec.Raw:
    return msgspec.Raw(msgspec.json.encode(value))


@functools.cache
def type_info(kind: Any) -> mi.Type:
    return mi.type_info(kind)


PLAIN = Gen(st.text(max_size=20))


def accepted(t: mi.Type | None) -> frozenset[str]:
    """The JSON kinds a field of type `t` can take (None: inside a Raw, where anything goes)."""
    if t is None or isinstance(t, mi.RawType | mi.AnyType):
        return ALL_KINDS
    if isinstance(t, mi.UnionType):
        return frozenset().union(*(accepted(m) for m in t.types))
    if isinstance(t, mi.StrType | mi.LiteralType):
        return frozenset({"str"})
    if isinstance(t, mi.IntType):
        return frozenset({"int"})
    if isinstance(t, mi.FloatType):
        return frozenset({"int", "float"})
    if isinstance(t, mi.BoolType):
        return frozenset({"bool"})
    if isinstance(t, mi.NoneType):
        return frozenset({"null"})
    if isinstance(t, mi.ListType):
        return frozenset({"array"})
    if isinstance(t, mi.DictType | mi.StructType):
        return frozenset({"object"})
    raise AssertionError(f"no rule for {t}: extend this test for the new wire type")


# ---- mutations of a valid document ---------------------------------------------------------


@dataclass(frozen=True)
class Slot:
    """One value position in a decoded document, with the wire type expected there."""

    path: tuple[str | int, ...]
    type: mi.Type | None  # None: inside a Raw
    where: str  # msgspec's spelling of the path (`$.Node.Labels[...]`), "" inside a Raw


def _member(t: mi.Type | None, value: Any) -> mi.Type | None:
    """The member of a union that `value` is meant as (tagged structs by their tag)."""
    if not isinstance(t, mi.UnionType):
        return t
    kind = json_kind(value)
    fits = [m for m in t.types if kind in accepted(m)]
    tagged = [
        m
        for m in fits
        if isinstance(m, mi.StructType)
        and m.tag_field is not None
        and isinstance(value, dict)
        and value.get(m.tag_field) == m.tag
    ]
    return (tagged or fits or [t])[0]


def slots(
    value: Any, t: mi.Type | None, path: tuple[str | int, ...] = (), where: str = "$"
) -> Iterator[Slot]:
    """Every value position of `value` (itself included), read as wire type `t`."""
    yield Slot(path, t, where)
    if t is None or isinstance(t, mi.RawType):
        children: Iterator[tuple[str | int, Any]] = iter(())
        if isinstance(value, dict):
            children = iter(value.items())
        elif isinstance(value, list):
            children = iter(enumerate(value))
        for key, child in children:
            yield from slots(child, None, (*path, key), "")
        return
    t = _member(t, value)
    if isinstance(t, mi.StructType) and isinstance(value, dict):
        fields: dict[str, mi.Type] = {f.encode_name: f.type for f in t.fields}
        if t.tag_field is not None:
            fields[t.tag_field] = mi.LiteralType(values=(t.tag,))
        for key, child in value.items():
            yield from slots(child, fields.get(key), (*path, key), f"{where}.{key}")
    elif isinstance(t, mi.ListType) and isinstance(value, list):
        for i, child in enumerate(value):
            yield from slots(child, t.item_type, (*path, i), f"{where}[{i}]")
    elif isinstance(t, mi.DictType) and isinstance(value, dict):
        for key, child in value.items():
            yield from slots(child, t.value_type, (*path, key), f"{where}[...]")


def _set(doc: Any, path: tuple[str | int, ...], value: Any) -> Any:
    if not path:
        return value
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return doc


def _get(doc: Any, path: tuple[str | int, ...]) -> Any:
    for key in path:
        doc = doc[key]
    return doc


_SENTINEL = "\ue000nested\ue000"


Expect = Literal["invalid", "same", "same_or_invalid", "any"]


class Mutant:
    """A malformed document and what decoding it must do: `invalid` raise InvalidSpec (whose
    message `mentions` where), `same` decode equal to the original, `any` either."""

    def __init__(self, data: bytes, how: str, expect: Expect, mentions: str = "") -> None:
        self.data = data
        self.how = how
        self.expect = expect
        self.mentions = mentions

    def __repr__(self) -> str:  # hypothesis prints it: keep a 10,000-deep document short
        more = f"...({len(self.data)} bytes)" if len(self.data) > 120 else ""
        return f"Mutant({self.how!r}, {self.data[:120]!r}{more}, expect={self.expect!r})"


def _nested(depth: int, arrays: bool) -> bytes:
    if arrays:
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"null" + b"}" * depth


SHALLOW = st.integers(1, 64)
# From below the ~1000 levels where recursive decoders (msgspec's, json's) give up to far beyond;
# shrinking finds the least depth that breaks (hypothesis itself raises the recursion limit, so
# here that is ~2000, in a plain process ~1000).
DEEP = st.integers(900, 10_000)


@st.composite
def mutants(
    draw: st.DrawFn,
    kind: Any,
    original: Any,
    gen: Gen = PLAIN,
    depths: st.SearchStrategy[int] = SHALLOW,
    hows: tuple[str, ...] = ("retype", "drop", "unknown", "nest", "other", "bytes", "flip"),
) -> Mutant:
    top = type_info(kind)
    doc = msgspec.json.decode(wire.encode(original))
    spots = list(slots(doc, top))
    structs = [
        s
        for s in spots
        if isinstance(_member(s.type, _get(doc, s.path)), mi.StructType)
        and isinstance(_get(doc, s.path), dict)
    ]
    how = draw(st.sampled_from(hows))
    if how == "retype":
        spot = draw(st.sampled_from(spots))
        ok = accepted(spot.type)
        if ok == ALL_KINDS:
            value = draw(gen.json)
            expect: Expect = "any"
        else:
            value = draw(gen.of_kind(draw(st.sampled_from(sorted(ALL_KINDS - ok)))))
            expect = "invalid"
        data = msgspec.json.encode(_set(doc, spot.path, value))
        mentions = f"`{spot.where}`" if expect == "invalid" and spot.path else ""
        return Mutant(data, f"{spot.where or spot.path} := {value!r}", expect, mentions)
    if how == "drop" and structs:
        spot = draw(st.sampled_from(structs))
        obj = _get(doc, spot.path)
        if obj:
            key = draw(st.sampled_from(sorted(obj)))
            struct = _member(spot.type, obj)
            assert isinstance(struct, mi.StructType)
            required = {f.encode_name for f in struct.fields if f.required}
            if struct.tag_field and isinstance(spot.type, mi.UnionType):
                required.add(struct.tag_field)  # a struct decoded as itself needs no tag
            del obj[key]
            needed = key in required
            return Mutant(
                msgspec.json.encode(doc),
                f"drop {spot.where}.{key}",
                "invalid" if needed else "any",
                f"`{key}`" if needed else "",
            )
    if how == "unknown" and structs:
        spot = draw(st.sampled_from(structs))
        key = "x-" + draw(gen.text)
        value = draw(gen.json)
        _get(doc, spot.path)[key] = value
        return Mutant(msgspec.json.encode(doc), f"{spot.where}.{key} += {value!r}", "same")
    if how == "nest":
        depth = draw(depths)
        arrays = draw(st.booleans())
        nested = _nested(depth, arrays)
        unknown_field: bool = draw(st.booleans())
        if structs and unknown_field:  # an unknown field: must be skipped
            spot = draw(st.sampled_from(structs))
            _get(doc, spot.path)["x-deep"] = _SENTINEL
            expect, what, mentions = "same_or_invalid", f"{spot.where}.x-deep", ""
        else:
            spot = draw(st.sampled_from(spots))
            doc = _set(doc, spot.path, _SENTINEL)
            bad = ("array" if arrays else "object") not in accepted(spot.type)
            expect = "invalid" if bad else "any"
            what = spot.where or str(spot.path)
            mentions = ""  # "nested too deeply" need not say where
        data = msgspec.json.encode(doc).replace(msgspec.json.encode(_SENTINEL), nested, 1)
        shape = "[" if arrays else "{"
        return Mutant(data, f"{what} := {shape}*{depth}", expect, mentions)
    if how == "other":
        other = draw(st.sampled_from(WIRE_TYPES))
        return Mutant(wire.encode(draw(gen.instances(other))), f"a {other.__name__}", "any")
    if how == "flip":
        flipped = bytearray(wire.encode(original))
        for _ in range(draw(st.integers(1, 3))):
            flipped[draw(st.integers(0, 10**6)) % len(flipped)] = draw(st.integers(0, 255))
        return Mutant(bytes(flipped), "bytes flipped", "any")
    return Mutant(draw(st.binary(max_size=64)), "random bytes", "any")


# ---- pure properties -----------------------------------------------------------------------

PURE = settings(
    max_examples=40,
    deadline=None,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],  # explain traces: minutes here
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.parametrize("kind", DECODE_TARGETS, ids=_name)
@PURE
@given(data=st.data())
def test_valid_messages_round_trip(kind: Any, data: st.DataObject) -> None:
    """encode -> decode gives the value back, and encoding it again the same bytes."""
    value = data.draw(PLAIN.instances(kind))
    encoded = wire.encode(value)
    decoded = wire.decode(encoded, kind)
    assert decoded == value
    assert wire.encode(decoded) == encoded
    if isinstance(value, wire.CancelCommand | wire.RunCommand):  # as a node reads them
        assert wire.decode_command(encoded) == value


def _decodes_as_expected(kind: Any, original: Any, mutant: Mutant) -> None:
    try:
        decoded = wire.decode(mutant.data, kind, what="fuzz")
    except InvalidSpec as exc:
        assert mutant.expect != "same", f"{mutant.how}: refused: {exc}"
        assert mutant.mentions in str(exc), f"{mutant.how}: {exc} does not say where"
        return
    assert mutant.expect != "invalid", f"{mutant.how}: accepted as {decoded!r}"
    if mutant.expect in ("same", "same_or_invalid"):
        assert decoded == original, f"{mutant.how}: changed the value"


@pytest.mark.parametrize("kind", DECODE_TARGETS, ids=_name)
@PURE
@given(data=st.data())
def test_malformed_messages_are_invalid_spec(kind: Any, data: st.DataObject) -> None:
    """A field of the wrong JSON type, a missing or unknown field, shallow nesting, another
    struct, flipped or random bytes: InvalidSpec (naming the field) or a clean decode."""
    original = data.draw(PLAIN.instances(kind))
    _decodes_as_expected(kind, original, data.draw(mutants(kind, original)))


@pytest.mark.parametrize("kind", DECODE_TARGETS, ids=_name)
@PURE
@given(data=st.data())
def test_deeply_nested_messages_are_invalid_spec(kind: Any, data: st.DataObject) -> None:
    """~1000 and 10,000 levels of `[` or `{"a":` in any field or in an unknown one."""
    original = data.draw(PLAIN.instances(kind))
    _decodes_as_expected(kind, original, data.draw(mutants(kind, original, PLAIN, DEEP, ("nest",))))


@pytest.mark.parametrize("kind", DECODE_TARGETS, ids=_name)
@PURE
@given(data=st.binary(max_size=256) | PLAIN.json.map(msgspec.json.encode))
def test_arbitrary_bytes_are_invalid_spec_or_decode(kind: Any, data: bytes) -> None:
    with contextlib.suppress(InvalidSpec):
        wire.decode(data, kind, what="fuzz")


# ---- a live orchestrator -------------------------------------------------------------------

NOOP = {"Type": "batch", "Tasks": [{"Engine": {"Type": "noop"}}]}
BYSTANDER = "bystander"  # an agent no fuzzed message is addressed to
NODE_IDS = ["node-0", "fuzz-a", "fuzz-b"]  # node subjects the fuzz writes to
REQUESTS: dict[str, tuple[Any, Any]] = {
    "job.submit": (wire.SubmitRequest, wire.SubmitReply),
    "job.describe": (wire.JobRef, wire.JobView),
    "job.list": (wire.ListRequest, wire.JobList),
    "job.stop": (wire.StopRequest, wire.JobView),
    "job.executions": (wire.JobRef, wire.ExecutionList),
    "job.history": (wire.JobRef, wire.History),
    "job.versions": (wire.JobRef, wire.VersionList),
    "job.rerun": (wire.JobRef, wire.SubmitReply),
    "job.purge": (wire.JobRef, wire.JobView),
    "node.list": (wire.ListRequest, wire.NodeList),
    "node.describe": (wire.NodeRef, wire.NodeView),
    "node.approve": (wire.NodeRef, wire.NodeView),
    "node.reject": (wire.NodeRef, wire.NodeView),
    "node.drain": (wire.NodeRef, wire.NodeView),
    "node.undrain": (wire.NodeRef, wire.NodeView),
    "node.remove": (wire.NodeRef, wire.NodeView),
}
assert set(REQUESTS) == set(subjects.API_VERBS), "a new API verb: add it to REQUESTS"
MAX_PAYLOAD = 1024 * 1024
LIVE_EXAMPLES = 300


@dataclass(repr=False)
class Send:
    """One message to send; `reply` is the data type of an ok reply to a request."""

    label: str  # the subject with the node id as `*`, for the counts
    subject: str
    data: bytes
    how: Literal["request", "publish", "js"]
    reply: Any = None

    def __repr__(self) -> str:  # hypothesis prints it: keep a megabyte message short
        more = f"...({len(self.data)} bytes)" if len(self.data) > 200 else ""
        return f"{self.how} {self.subject} {self.data[:200]!r}{more}"


@dataclass
class World:
    """What the fuzz knows (ids to aim at, messages to replay) and what it checks."""

    ids: list[str]  # what strings are drawn from, besides random text
    jobs: list[str]  # ids and names a JobRef may name
    executions: list[tuple[str, str]]  # (execution id, job id) an update may name
    sent: list[Send] = field(default_factory=list)
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)  # (label, outcome)
    errors: list[logging.LogRecord] = field(default_factory=list)
    stray_replies: list[bytes] = field(default_factory=list)
    bystander: bytes = b""
    terminal: dict[str, wire.ExecutionRecord] = field(default_factory=dict)
    first_failure: str = ""
    gen: Gen = field(init=False)

    def __post_init__(self) -> None:
        self.gen = Gen(live_text(self), live_specs(self))


class _Errors(logging.Handler):
    def __init__(self, world: World) -> None:
        super().__init__(logging.ERROR)
        self.world = world

    def emit(self, record: logging.LogRecord) -> None:
        self.world.errors.append(record)


def _not_the_bystander(s: str) -> bool:
    # A NodeRef resolves unique prefixes: no fuzzed request may name the bystander.
    return not (s and BYSTANDER.startswith(s))


def live_text(world: World) -> st.SearchStrategy[str]:
    known = st.sampled_from(world.ids)  # fixed before the run: generation must not drift
    fixed = st.sampled_from(["", "default", "j-", "node-", "completed", "a" * 300, "shoal.v1.>"])
    return st.one_of(known, fixed, st.text(max_size=12)).filter(_not_the_bystander)


JOB_NAMES = ["baseline", "fuzz-1", "fuzz-2"]  # jobs the fuzz may submit; JobRefs resolve names
VALID_SPECS = st.fixed_dictionaries(
    {"Type": st.sampled_from(["batch", "ops"]), "Tasks": st.just(NOOP["Tasks"])},
    optional={"Name": st.sampled_from(JOB_NAMES)},
).map(_raw)


def live_specs(world: World) -> st.SearchStrategy[msgspec.Raw]:
    return VALID_SPECS | PLAIN.json.map(_raw)


@st.composite
def messages(draw: st.DrawFn, world: World) -> Send:
    gen = world.gen
    target = draw(st.sampled_from(["api", "api", "api", "hello", "heartbeat", "update", "replay"]))
    # Draw the same way whatever happened before (hypothesis replays choice sequences).
    pick = draw(st.integers(0, 10**6))
    if target == "replay":
        if not world.sent:
            return Send("api.job.list", subjects.api("job.list"), b"{}", "request", wire.JobList)
        return world.sent[pick % len(world.sent)]
    node = draw(st.sampled_from(NODE_IDS))
    kind: Any
    if target == "hello":
        kind = wire.Hello
        send = Send("node.*.hello", subjects.node_hello(node), b"", "request", wire.HelloReply)
    elif target == "heartbeat":
        kind = wire.Heartbeat
        send = Send("node.*.heartbeat", subjects.node_heartbeat(node), b"", "publish")
    elif target == "update":
        kind = wire.ExecutionUpdate
        send = Send("node.*.update", subjects.node_update(node), b"", "js")
    else:
        # Not job.purge: removing the ended baseline job is what it is for, and the
        # invariants below look for that job (tests/integration/test_purge.py covers it).
        verb = draw(st.sampled_from([*(v for v in REQUESTS if v != "job.purge"), "job.bogus"]))
        kind, reply = REQUESTS.get(verb, (wire.JobRef, None))
        send = Send(f"api.{verb}", subjects.api(verb), b"", "request", reply)
    value = draw(gen.instances(kind))
    if draw(st.booleans()):  # coherent: names what exists (the subject's node, real jobs)
        replace = msgspec.structs.replace
        if kind is wire.Hello:
            value = replace(value, node=replace(value.node, id=node))
        elif kind is wire.Heartbeat:
            value = replace(value, node_id=node)
        elif kind is wire.ExecutionUpdate:
            execution, job = draw(st.sampled_from(world.executions))
            value = replace(value, node_id=node, execution_id=execution, job_id=job)
        elif kind is wire.SubmitRequest:
            value = replace(value, spec=draw(VALID_SPECS))
        elif kind in (wire.JobRef, wire.StopRequest):
            value = replace(value, job_id=draw(st.sampled_from(world.jobs)))
        elif kind is wire.NodeRef:
            value = replace(value, node_id=node)
    shape = draw(st.sampled_from(["valid", "mutant", "mutant", "oversized"]))
    if shape == "valid":
        data = wire.encode(value)
    elif shape == "mutant":
        data = draw(mutants(kind, value, gen, SHALLOW | DEEP)).data
    else:
        pad = draw(st.sampled_from([64_000, MAX_PAYLOAD - 4_000, MAX_PAYLOAD + 1]))
        doc = msgspec.json.decode(wire.encode(value))
        doc["Pad"] = "x" * pad
        data = msgspec.json.encode(doc)
    return Send(send.label, send.subject, data, send.how, send.reply)


class Live:
    """Sends a hypothesis example on the test's loop and checks every invariant after it."""

    def __init__(self, s: Stack, bus: Bus, nc: Any, world: World) -> None:
        self.s = s
        self.bus = bus
        self.nc = nc
        self.world = world
        self.inbox = "fuzz.replies"

    async def send(self, m: Send) -> None:
        w = self.world
        if len(m.data) > MAX_PAYLOAD:  # refused by the client before it leaves
            w.counts[m.label, "too big"] += 1
            with pytest.raises(ShoalError):
                if m.how == "js":
                    await self.bus.js_publish(m.subject, m.data)
                else:
                    await self.bus.request(m.subject, m.data)
            return
        w.sent.append(m)
        if m.how == "publish":
            w.counts[m.label, "published"] += 1
            await self.nc.publish(m.subject, m.data, reply=self.inbox)
            return
        if m.how == "js":
            w.counts[m.label, "published"] += 1
            await self.bus.js_publish(m.subject, m.data)
            return
        raw = await self.bus.request(m.subject, m.data, timeout=10)
        reply = wire.decode(raw, wire.ApiReply, what=f"reply on {m.subject}")
        w.counts[m.label, "ok" if reply.ok else reply.error.code if reply.error else "?"] += 1
        if not reply.ok:
            assert reply.error is not None and reply.error.message, reply
            assert not reply.error.message.startswith("internal error"), reply.error.message
            return
        assert m.reply is not None, f"{m.subject} answered ok: {reply}"
        answer = wire.decode(reply.data, m.reply, what=f"data of reply on {m.subject}")
        if isinstance(answer, wire.NodeView) and answer.id == BYSTANDER:
            w.bystander = b""  # changed on purpose through the API

    async def _stream_state(self, stream: str, subjects_filter: str = "") -> Any:
        body = json.dumps({"subjects_filter": subjects_filter}).encode() if subjects_filter else b""
        return json.loads(await self.bus.request(f"$JS.API.STREAM.INFO.{stream}", body))["state"]

    async def _drained(self) -> bool:
        return int((await self._stream_state(subjects.UPDATES_STREAM))["messages"]) == 0

    async def _records(self, bucket: str, kind: type[Any]) -> dict[str, Any]:
        """Every current value of a KV bucket, decoded (the server's own list of keys)."""
        state = await self._stream_state(f"KV_{bucket}", f"$KV.{bucket}.>")
        kv = await self.bus.kv(bucket)
        out = {}
        for subject in state.get("subjects") or {}:
            key = subject.removeprefix(f"$KV.{bucket}.")
            entry = await kv.get(key)
            if entry is not None and entry.value is not None:
                out[key] = wire.decode(entry.value, kind, what=f"{bucket}/{key}")
        return out

    async def check(self) -> None:
        w = self.world
        orchestrator = self.s.orchestrator
        assert orchestrator is not None and orchestrator.leading, "the orchestrator stopped leading"
        drained: Callable[[], Awaitable[bool] | bool] = self._drained
        await eventually(
            drained,
            timeout=10,
            what="every execution update consumed (the update consumer is alive)",
        )
        await self.nc.flush()
        await self.bus.flush()
        # State: every record decodes, sits under its own key, refers to what exists.
        jobs: dict[str, wire.JobRecord] = {}
        for key, job in (await self._records(subjects.JOBS_BUCKET, wire.JobRecord)).items():
            assert key == subjects.job_key(job.namespace, job.id), (key, job)
            assert isinstance(json.loads(bytes(job.spec)), dict), job
            jobs[job.id] = job
        assert jobs, "no jobs at all: the baseline job is gone"
        execs = await self._records(subjects.EXECUTIONS_BUCKET, wire.ExecutionRecord)
        for key, e in execs.items():
            assert key == subjects.execution_key(e.namespace, e.job_id, e.id), (key, e)
            assert e.job_id in jobs, f"execution {e.id} of a job that does not exist: {e}"
            assert e.job_version <= jobs[e.job_id].version, e
            if e.id in w.terminal:
                assert e == w.terminal[e.id], f"a terminal execution changed: {e}"
            elif e.compute_state in wire.TERMINAL_COMPUTE_STATES:
                w.terminal[e.id] = e
        nodes = await self._records(subjects.NODES_BUCKET, wire.NodeRecord)
        for key, node in nodes.items():
            assert key == node.info.id == subjects.check_token(key), (key, node)
        # Only a hello on a node's own subject registers it.
        assert set(nodes) <= {BYSTANDER, *NODE_IDS}, sorted(nodes)
        if not w.bystander:
            w.bystander = wire.encode(nodes[BYSTANDER])
        assert wire.encode(nodes[BYSTANDER]) == w.bystander, (
            f"the bystander changed: {nodes[BYSTANDER]}"
        )
        # The orchestrator's in-memory mirror follows KV (jobs and nodes appear only through
        # the requests above, which have all been answered).
        mirror = orchestrator.mirror
        await eventually(
            lambda: (
                set(mirror.jobs) | set(mirror.settled) == set(jobs)
                and set(mirror.nodes) == set(nodes)
            ),
            timeout=5,
            what="the orchestrator's mirror to hold the jobs and nodes in KV",
        )
        # Alive: the API answers, nothing crashed, nobody answered a heartbeat.
        async with asyncio.timeout(10):
            page = wire.decode(
                await self.bus.request(subjects.api("node.list"), wire.encode(wire.ListRequest())),
                wire.ApiReply,
            )
        assert page.ok, page
        assert not w.errors, "\n".join(_format(r) for r in w.errors)
        assert not w.stray_replies, w.stray_replies

    async def play(self, batch: list[Send]) -> None:
        try:
            for m in batch:
                await self.send(m)
            await self.check()
        except BaseException as exc:
            if not self.world.first_failure:
                sent = "\n".join(f"  {m!r}" for m in batch)
                self.world.first_failure = (
                    f"{type(exc).__name__}: {exc}\nafter sending, in order:\n{sent}"
                )
            raise


def _format(record: logging.LogRecord) -> str:
    text = f"{record.name}: {record.getMessage()}"
    if record.exc_info:
        text += "\n" + logging.Formatter().formatException(record.exc_info)
    return text


async def test_live_orchestrator_survives_generated_messages(
    nats_server: EmbeddedNats, tmp_path: Path, bus: Bus
) -> None:
    async with stack(nats_server.url, tmp_path, agents=1) as s, await s.client() as client:
        await s.add_agent(BYSTANDER)
        baseline = await client.submit({"Name": "baseline", **NOOP})
        done = await client.wait(baseline, timeout=20)
        assert done.state == "Completed"
        executions = [(e.id, baseline) for e in done.executions]
        world = World(
            ids=[baseline, *(e for e, _ in executions), *NODE_IDS, *JOB_NAMES],
            jobs=[baseline, *JOB_NAMES],
            executions=executions,
        )
        handler = _Errors(world)
        logging.getLogger().addHandler(handler)
        nc = await nats.connect(nats_server.url, name="fuzz-publisher")
        try:
            await nc.subscribe("fuzz.replies", cb=_collect(world.stray_replies))
            live = Live(s, bus, nc, world)
            await live.check()
            loop = asyncio.get_running_loop()

            @settings(
                max_examples=LIVE_EXAMPLES,
                deadline=None,
                derandomize=True,
                database=None,
                phases=[Phase.explicit, Phase.generate],  # shrinking a live system misleads
                suppress_health_check=[
                    HealthCheck.too_slow,
                    HealthCheck.data_too_large,
                    HealthCheck.filter_too_much,
                    HealthCheck.large_base_example,
                ],
            )
            @given(data=st.data())
            def explore(data: st.DataObject) -> None:
                batch = data.draw(st.lists(messages(world), min_size=1, max_size=6), "messages")
                asyncio.run_coroutine_threadsafe(live.play(batch), loop).result(timeout=90)

            try:
                await asyncio.to_thread(explore)
            except Exception as exc:
                if world.first_failure:
                    raise AssertionError(world.first_failure) from exc
                raise
            finally:
                _print_counts(world.counts)
            # Still working: both agents usable again, a normal job completes.
            for node in ("node-0", BYSTANDER):
                await client.node_action("approve", node)
                await client.node_action("undrain", node)
            world.bystander = b""  # changed just now, on purpose
            again = await client.submit({"Name": "after-fuzz", **NOOP})
            assert (await client.wait(again, timeout=30)).state == "Completed"
            nodes = {n.id: n for n in await client.nodes()}
            assert nodes[BYSTANDER].connection == "CONNECTED", nodes
            await live.check()
        finally:
            logging.getLogger().removeHandler(handler)
            await nc.close()


def _print_counts(counts: Counter[tuple[str, str]]) -> None:
    labels = sorted({label for label, _ in counts})
    print(f"\n{sum(counts.values())} generated messages, by subject and outcome:")
    for label in labels:
        outcomes = {o: n for (lb, o), n in sorted(counts.items()) if lb == label}
        detail = ", ".join(f"{o} {n}" for o, n in outcomes.items())
        print(f"  {label:20} {sum(outcomes.values()):4}  ({detail})")


def _collect(into: list[bytes]) -> Callable[[Any], Any]:
    async def cb(msg: Any) -> None:
        into.append(bytes(msg.data))

    return cb
