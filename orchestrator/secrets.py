"""Secrets: the `secret.*` API verbs, their values encrypted in KV, and sealing for one node.

A secret is stored in `shoal-secrets` under `<namespace>.<name>`, its value AES-GCM encrypted
under the orchestrators' master key (`shoal orchestrator --secrets-key FILE`; every replica
needs the same file). A job refers to it in its task's `Env` (`DB_PASSWORD: secret:db-password`);
the reference stays as it is in every record, view and event. When the planner offers an
execution, each referenced value is read, decrypted and sealed for the node it is offered to
(shared/sealing.py), and travels only inside that offer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import msgspec

from orchestrator.replies import error_reply
from shared import subjects, wire
from shared.bus import KV, Bus, Message, Subscription
from shared.errors import Conflict, InvalidSpec, NotFound, Problem, ShoalError, Unavailable
from shared.lifecycle import Service
from shared.sealing import (
    b64,
    decrypt,
    encrypt,
    key_id,
    load_or_create_key,
    seal,
    sealing_context,
    secret_refs,
    unb64,
)
from shared.spec import JobSpec

log = logging.getLogger(__name__)

SECRETS_BUCKET = "shoal-secrets"
MAX_SECRET_BYTES = 64 * 1024  # an environment variable's worth
NS_SECRET_SUBJECTS = subjects.ns_api("*", "secret.>")  # a namespace's users
CLUSTER_SECRET_SUBJECTS = subjects.api("secret.>")  # admins: the body's namespace
NO_PUBLIC_KEY = (
    "cannot be given secrets: its agent said hello without a public key (it is older than "
    "secrets support); upgrade it to run jobs whose Env refers to secrets"
)


def secret_key(namespace: str, name: str) -> str:
    return f"{namespace}.{name}"


def _at_rest_context(namespace: str, name: str) -> bytes:
    # Bound to its key: a value copied under another secret's key does not decrypt.
    return f"shoal.v1 secret at rest|{namespace}.{name}".encode()


def _bad_name(name: str) -> str:
    try:
        subjects.check_token(name, "secret name")
    except ValueError as exc:
        return str(exc)
    return ""


async def missing_secrets(bus: Bus, spec: JobSpec, namespace: str) -> list[str]:
    """What is wrong with the secrets `spec`'s Env refers to, one `path: message` each: a
    name that is not one, or a secret that does not exist in `namespace`. Empty when they
    all exist (and at once, without a read, when it refers to none)."""
    refs = secret_refs(spec.task.env)
    if not refs:
        return []
    kv = await bus.kv(SECRETS_BUCKET)
    problems = []
    for variable, name in refs:
        path = f"Tasks[0].Env.{variable}"
        if bad := _bad_name(name):
            problems.append(f"{path}: {bad}")
        elif await kv.get(secret_key(namespace, name)) is None:
            problems.append(
                f"{path}: secret {name!r} does not exist in namespace {namespace!r} "
                f"(create it first: shoal secret create {name} -n {namespace} ...)"
            )
    return problems


async def refuse_missing_secrets(bus: Bus, spec: JobSpec, namespace: str) -> None:
    """InvalidSpec listing `missing_secrets`, if there are any."""
    problems = await missing_secrets(bus, spec, namespace)
    if problems:
        raise InvalidSpec([Problem(*p.split(": ", 1)) for p in problems])


def seal_env(
    values: Mapping[str, str],
    refs: Iterable[tuple[str, str]],
    public_key: str,
    execution_id: str,
    node_id: str,
) -> list[wire.SealedEnv]:
    """Each (variable, secret) of `refs`, its value from `values` sealed for the node
    whose key (base64, from its hello) is `public_key`."""
    recipient = unb64(public_key, "the node's public key")
    return [
        wire.SealedEnv(
            name=variable,
            secret=name,
            sealed=b64(
                seal(
                    values[name].encode(),
                    recipient,
                    sealing_context(execution_id, node_id, variable),
                )
            ),
        )
        for variable, name in refs
    ]


async def secrets_for(
    secrets: Secrets | None, namespace: str, spec: JobSpec
) -> dict[str, str] | str:
    """The values of the secrets `spec`'s Env refers to (the planner reads them once a plan),
    or why they cannot be had: its executions then fail with that."""
    refs = secret_refs(spec.task.env)
    if not refs:
        return {}
    if secrets is None:
        return "this orchestrator does not handle secrets"
    try:
        values = await secrets.values(namespace, [name for _, name in refs])
    except ShoalError as exc:
        return str(exc)
    for variable, name in refs:
        if name not in values:
            return (
                f"Env {variable} refers to secret {name!r}, which does not exist in namespace "
                f"{namespace!r} (deleted after the job was submitted?): create it again "
                f"(shoal secret create {name} -n {namespace}), then rerun the job"
            )
    return values


class Secrets(Service):
    """Answers `secret.create|list|delete` on `shoal.v1.ns.<ns>.api.secret.*` (that namespace)
    and `shoal.v1.api.secret.*` (admins: the body's namespace), and decrypts values for the
    planner. Without a master key it stores nothing and says how to give it one."""

    def __init__(self, bus: Bus, key: bytes | Path | None) -> None:
        """`key`: the master key, or the file holding it (made if missing, at start)."""
        self._bus = bus
        self._key_file = key if isinstance(key, Path) else None
        self._key = key if isinstance(key, bytes) else None
        self._kv: KV | None = None
        self._subscriptions: list[Subscription] = []
        self._handlers = {
            "secret.create": self.create,
            "secret.list": self.list,
            "secret.delete": self.delete,
        }

    async def start(self) -> None:
        if self._kv is not None:
            return
        if self._key_file is not None:
            self._key = load_or_create_key(self._key_file)
        self._kv = await self._bus.kv(SECRETS_BUCKET)
        for subject in (NS_SECRET_SUBJECTS, CLUSTER_SECRET_SUBJECTS):
            self._subscriptions.append(
                await self._bus.subscribe(
                    subject, self._dispatch, queue=subjects.API_QUEUE, concurrency=16
                )
            )

    async def stop(self, timeout: float = 5.0) -> None:
        """Take no more requests, answer the ones taken. Idempotent."""
        subscriptions, self._subscriptions = self._subscriptions, []
        for subscription in subscriptions:
            await subscription.drain(timeout)

    @property
    def kv(self) -> KV:
        if self._kv is None:
            raise Unavailable("the secrets store is not open (the orchestrator is not started)")
        return self._kv

    # ---- the API ---------------------------------------------------------------------------

    async def _dispatch(self, msg: Message) -> None:
        try:
            namespace, verb = _scope(msg.subject)
            handler = self._handlers.get(verb)
            if handler is None:
                raise NotFound(f"unknown API verb {verb!r}; known: {', '.join(self._handlers)}")
            result = await handler(msg.data, namespace)
            reply = wire.ApiReply(ok=True, data=msgspec.Raw(wire.encode(result)))
        except ShoalError as exc:
            reply = error_reply(exc)
        except Exception:  # a bug must still answer; its text might hold what was sent
            log.exception("API %s crashed", msg.subject)
            error = wire.ApiError(code="error", message="internal error (see the orchestrator log)")
            reply = wire.ApiReply(ok=False, error=error)
        await self._bus.respond(msg, wire.encode(reply))

    async def create(self, data: bytes, scope: str | None) -> wire.SecretView:
        req = wire.decode(data, wire.SecretCreateRequest, what="secret.create request")
        namespace = _namespace(scope, req.namespace)
        _check_name(req.name)
        _check_value(req.name, req.value)
        master = self._master()
        key = secret_key(namespace, req.name)
        now = time.time()
        stored = wire.StoredSecret(
            name=req.name,
            namespace=namespace,
            key_id=key_id(master),
            ciphertext=b64(
                encrypt(master, req.value.encode(), _at_rest_context(namespace, req.name))
            ),
            created_at=now,
            updated_at=now,
        )
        try:
            await self.kv.create(key, wire.encode(stored))
            return _view(stored)
        except Conflict:
            if not req.update:
                raise Conflict(
                    f"secret {req.name!r} already exists in namespace {namespace!r}: to replace "
                    f"its value, shoal secret create {req.name} --update (Update: true)"
                ) from None
        entry = await self.kv.get(key)
        if entry is None or entry.value is None:  # deleted meanwhile: create it afresh
            await self.kv.create(key, wire.encode(stored))
            return _view(stored)
        old = wire.decode(entry.value, wire.StoredSecret, what=f"secret {key}")
        stored = msgspec.structs.replace(stored, created_at=old.created_at)
        await self.kv.update(key, wire.encode(stored), entry.revision)  # Conflict: a race
        return _view(stored)

    async def list(self, data: bytes, scope: str | None) -> wire.SecretList:
        req = wire.decode(data or b"{}", wire.SecretListRequest, what="secret.list request")
        if scope is None and not req.namespace:
            pattern = ">"  # an admin, every namespace
        else:
            pattern = secret_key(_namespace(scope, req.namespace), "*")
        found: list[wire.SecretView] = []
        async for entry in self.kv.watch(pattern):
            if entry is None:
                break
            if entry.value is not None:
                try:
                    found.append(_view(wire.decode(entry.value, wire.StoredSecret)))
                except ShoalError:
                    log.warning("%s/%s is not a stored secret", SECRETS_BUCKET, entry.key)
        found.sort(key=lambda s: (s.namespace, s.name))
        return wire.SecretList(secrets=found)

    async def delete(self, data: bytes, scope: str | None) -> wire.SecretView:
        req = wire.decode(data, wire.SecretRef, what="secret.delete request")
        namespace = _namespace(scope, req.namespace)
        _check_name(req.name)
        key = secret_key(namespace, req.name)
        entry = await self.kv.get(key)
        if entry is None or entry.value is None:
            raise NotFound(f"no secret {req.name!r} in namespace {namespace!r}")
        stored = wire.decode(entry.value, wire.StoredSecret, what=f"secret {key}")
        await self.kv.delete(key, entry.revision)
        return _view(stored)

    # ---- for the planner -------------------------------------------------------------------

    async def values(self, namespace: str, names: Iterable[str]) -> dict[str, str]:
        """The plaintext of each named secret of `namespace` that exists (a missing one is
        left out). ShoalError when one cannot be decrypted (no key, another key)."""
        out: dict[str, str] = {}
        for name in set(names):
            if _bad_name(name):
                continue
            entry = await self.kv.get(secret_key(namespace, name))
            if entry is None or entry.value is None:
                continue
            stored = wire.decode(entry.value, wire.StoredSecret, what=f"secret {name}")
            master = self._master()
            if stored.key_id != key_id(master):
                raise ShoalError(
                    f"secret {name!r} of namespace {namespace!r} was stored under another "
                    f"secrets key (id {stored.key_id}; this orchestrator's is "
                    f"{key_id(master)}): give every orchestrator the same --secrets-key file"
                )
            ciphertext = unb64(stored.ciphertext, f"secret {name!r}")
            plain = decrypt(master, ciphertext, _at_rest_context(namespace, name))
            out[name] = plain.decode()
        return out

    def _master(self) -> bytes:
        if self._key is None:
            raise Unavailable(
                "this orchestrator has no secrets key: start it with --secrets-key FILE (the "
                "same file on every orchestrator; made if missing)"
            )
        return self._key


def _scope(subject: str) -> tuple[str | None, str]:
    """(namespace, verb) of a request's subject; namespace None on the cluster subject."""
    try:
        return subjects.api_scope(subject)
    except ValueError as exc:
        raise InvalidSpec(str(exc)) from None


def _namespace(scope: str | None, named: str) -> str:
    """The namespace a request is about: its subject's; on the cluster subject, the body's."""
    if scope is None:
        namespace = named or "default"
        try:
            return subjects.check_token(namespace, "namespace")
        except ValueError as exc:
            raise InvalidSpec([Problem("Namespace", str(exc))]) from None
    if named and named != scope:
        raise InvalidSpec(
            [Problem("Namespace", f"a request on namespace {scope!r}'s subject names {named!r}")]
        )
    return scope


def _check_name(name: str) -> None:
    if bad := _bad_name(name):
        raise InvalidSpec([Problem("Name", bad)])


def _check_value(name: str, value: str) -> None:
    size = len(value.encode())
    if size > MAX_SECRET_BYTES:
        raise InvalidSpec(
            [Problem("Value", f"secret {name!r} is {size} bytes; at most {MAX_SECRET_BYTES}")]
        )
    if "\x00" in value:
        raise InvalidSpec(
            [Problem("Value", f"secret {name!r} holds a NUL byte, which no environment can")]
        )


def _view(stored: wire.StoredSecret) -> wire.SecretView:
    return wire.SecretView(
        name=stored.name,
        namespace=stored.namespace,
        created_at=stored.created_at,
        updated_at=stored.updated_at,
    )
