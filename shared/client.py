"""The Python client: everything the CLI does, over plain NATS request-reply and streams.

async with await ShoalClient.connect("nats://127.0.0.1:4222") as shoal:
    job_id = await shoal.submit(open("job.yaml").read())
    job = await shoal.wait(job_id, timeout=60)
    print(job.state)
"""

from __future__ import annotations

import asyncio
import builtins
import importlib
import json
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import msgspec

from shared import subjects, trace, wire
from shared.bus import Bus, creds_namespace
from shared.errors import Problem, ShoalError, Unavailable, error_from_code
from shared.logs import JobLogs, LogLine
from shared.results import ARCHIVE, fetch_result, unpack
from shared.spec import JobSpec
from shared.waiting import Waiter

# Publishers whose results live outside NATS, by name: (module, function), imported on use
# because boto3 and aiohttp cost a second of start-up that most commands never need.
RESULT_FETCHERS: dict[str, tuple[str, str]] = {
    "s3": ("shared.s3", "fetch_result"),
    "ipfs": ("shared.ipfs", "fetch_result"),
}

T = TypeVar("T")

__all__ = ["LogLine", "ShoalClient", "UnchangedSpecWarning", "new_job_id"]


def _named_namespace(spec: str | Mapping[str, Any] | JobSpec) -> str:
    """The namespace a spec names itself, submitted to that namespace's subject; "" for YAML
    text (the client's namespace; the orchestrator refuses one that names another)."""
    if isinstance(spec, JobSpec):
        return spec.namespace if "namespace" in spec.model_fields_set else ""
    if isinstance(spec, Mapping):
        value = spec.get("Namespace", spec.get("namespace", ""))
        return value if isinstance(value, str) else ""
    return ""


class UnchangedSpecWarning(UserWarning):
    """`run()` was given a named job's spec unchanged: nothing new ran, and the view returned
    is the existing version's (pass `force=True` to run it again)."""


class ShoalClient:
    """Shoal's API for one namespace (a tenant): its jobs' verbs go to
    `shoal.v1.ns.<namespace>.api.*`, the cluster's (nodes) to `shoal.v1.api.*`."""

    def __init__(self, bus: Bus, *, timeout: float = 10.0, namespace: str = "default") -> None:
        self.bus = bus
        self.timeout = timeout
        self.namespace = subjects.check_token(namespace, "namespace")
        self._waiter = Waiter(bus, self.describe)

    @classmethod
    async def connect(
        cls,
        url: str = "nats://127.0.0.1:4222",
        creds: str | None = None,
        *,
        tls_ca: str | None = None,
        timeout: float = 10.0,
        namespace: str = "",
    ) -> ShoalClient:
        """`namespace`: by default the credentials file's `namespace:` (`shoal auth init`
        writes a user's first), else "default"."""
        namespace = namespace or (creds_namespace(creds) if creds else None) or "default"
        subjects.check_token(namespace, "namespace")
        bus = await Bus.connect(
            url, creds=creds, name="shoal-client", fail_fast=True, tls_ca=tls_ca
        )
        return cls(bus, timeout=timeout, namespace=namespace)

    def in_namespace(self, namespace: str) -> ShoalClient:
        """A client of `namespace` on this one's connection (closing either closes both): for
        the jobs of a spec that names its namespace, which `submit` sends there."""
        if namespace == self.namespace:
            return self
        return ShoalClient(self.bus, timeout=self.timeout, namespace=namespace)

    async def close(self) -> None:
        await self.bus.close()

    async def __aenter__(self) -> ShoalClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _call(
        self, verb: str, request: Any, kind: type[T], *, cluster: bool = False, namespace: str = ""
    ) -> T:
        """A verb about `namespace` (by default this client's), or (`cluster`, and every node
        verb) about the whole cluster."""
        if cluster or verb.startswith("node."):
            subject = subjects.api(verb)
        else:
            subject = subjects.ns_api(namespace or self.namespace, verb)
        try:
            raw = await self.bus.request(subject, wire.encode(request), timeout=self.timeout)
        except Unavailable as exc:
            raise Unavailable(f"no orchestrator answered {verb} ({exc}); is one running?") from None
        reply = wire.decode(raw, wire.ApiReply, what=f"{verb} reply")
        if not reply.ok:
            raise _error(reply.error or wire.ApiError(code="error", message="request failed"))
        return wire.decode(reply.data, kind, what=f"{verb} reply")

    # ---- jobs --------------------------------------------------------------------------------

    async def submit(
        self,
        spec: str | Mapping[str, Any] | JobSpec,
        variables: Mapping[str, str] | None = None,
        *,
        force: bool = False,
    ) -> str:
        """Submit a spec (YAML/JSON text, a mapping, or a JobSpec); returns the job id."""
        return (await self.submit_full(spec, variables, force=force)).job_id

    async def submit_full(
        self,
        spec: str | Mapping[str, Any] | JobSpec,
        variables: Mapping[str, str] | None = None,
        *,
        force: bool = False,
        job_id: str = "",
    ) -> wire.SubmitReply:
        """Submit; an unnamed job gets `job_id` (default: a new `j-<uuid>`), so resending the
        same request after a lost reply finds the job instead of creating a second one."""
        job_id = job_id or new_job_id()
        namespace = _named_namespace(spec)
        if isinstance(spec, str):
            request = wire.SubmitRequest(
                spec_text=spec, variables=dict(variables or {}), force=force, job_id=job_id
            )
        else:
            data = spec.dump() if isinstance(spec, JobSpec) else dict(spec)
            request = wire.SubmitRequest(
                spec=msgspec.Raw(json.dumps(data).encode()), force=force, job_id=job_id
            )
        return await self._call("job.submit", request, wire.SubmitReply, namespace=namespace)

    async def run(
        self,
        spec: str | Mapping[str, Any] | JobSpec,
        variables: Mapping[str, str] | None = None,
        *,
        timeout: float | None = None,
        force: bool = False,
    ) -> wire.JobView:
        """Submit and wait until the job ends; TimeoutError after `timeout` seconds.

        A named job's spec that is unchanged from its current version submits nothing (a
        job that is running is not started twice): the view is that version's, ended or
        waited for, with an `UnchangedSpecWarning`. `force=True` runs it again as a new
        version.

        The job's id is chosen here and its stored state (`shoal.v1.ns.<ns>.state.<job-id>.>`,
        see `wait`) listened to before the submit, so its records alone tell how it went: an
        unnamed job needs no read at all. The job's history (`history()`) is written just
        after its state, and may lag by a moment. A spec naming another namespace than this
        client's runs and is waited for there.
        """
        named = _named_namespace(spec)
        if named and named != self.namespace:
            return await self.in_namespace(named).run(spec, variables, timeout=timeout, force=force)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        job_id = new_job_id()
        trace.mark("client.run", job_id)
        inbox = await self._waiter.listen(self.namespace, job_id)
        try:
            async with asyncio.timeout_at(deadline):
                reply = await self.submit_full(spec, variables, force=force, job_id=job_id)
                trace.mark("client.answered", job_id)
                if reply.job_id == job_id:
                    view = await self._waiter.follow(job_id, inbox, from_creation=True)
                    trace.mark("client.ended", job_id)
                    return view
        finally:
            await inbox.close()
        # A named job: its id follows from its name, and it may be a new version of a job
        # that exists already.
        if not reply.changed:
            said = "; ".join(reply.warnings) or "the spec is unchanged"
            warnings.warn(
                UnchangedSpecWarning(
                    f"job {reply.job_id}: {said}. run() returns version {reply.version} as "
                    "it is or ends; run(..., force=True) runs it again as a new version"
                ),
                stacklevel=2,
            )
        left = None if deadline is None else max(deadline - loop.time(), 0.0)
        return await self.wait(reply.job_id, left, version=reply.version)

    async def describe(self, job_id: str, version: int = 0) -> wire.JobView:
        return await self._call(
            "job.describe", wire.JobRef(job_id=job_id, version=version), wire.JobView
        )

    async def versions(self, job_id: str) -> builtins.list[wire.JobVersion]:
        reply = await self._call("job.versions", wire.JobRef(job_id=job_id), wire.VersionList)
        return reply.versions

    async def rerun(self, job_id: str) -> wire.SubmitReply:
        return await self._call("job.rerun", wire.JobRef(job_id=job_id), wire.SubmitReply)

    async def jobs(
        self,
        namespace: str = "",
        limit: int = 100,
        *,
        every: bool = False,
        all_namespaces: bool = False,
    ) -> list[wire.JobView]:
        """The newest `limit` jobs (`every`: all of them), newest first, page after page: of
        this client's namespace, or (an admin's) of `namespace` or of every namespace."""
        out: list[wire.JobView] = []
        after = ""
        cluster = all_namespaces or bool(namespace and namespace != self.namespace)
        while every or len(out) < limit:
            want = 1_000 if every else limit - len(out)
            request = wire.ListRequest(namespace=namespace, limit=want, after=after)
            page = await self._call("job.list", request, wire.JobList, cluster=cluster)
            out.extend(page.jobs)
            if not page.next:
                break
            after = page.next
        return out

    async def stop(self, job_id: str, reason: str = "stopped by user") -> wire.JobView:
        return await self._call(
            "job.stop", wire.StopRequest(job_id=job_id, reason=reason), wire.JobView
        )

    async def purge(self, job_id: str) -> wire.JobView:
        """Remove a job that has ended, with its executions, versions, history, logs and
        results; the job as it was. Conflict if it has not ended."""
        return await self._call("job.purge", wire.JobRef(job_id=job_id), wire.JobView)

    async def executions(self, job_id: str) -> builtins.list[wire.ExecutionView]:
        """Every version's executions, oldest first: page after page (`execution_page`)."""
        out: builtins.list[wire.ExecutionView] = []
        while True:
            page = await self.execution_page(job_id, len(out))
            out.extend(page.executions)
            if not page.executions or len(out) >= page.total:
                return out

    async def execution_page(
        self, job_id: str, offset: int = 0, limit: int = 1000
    ) -> wire.ExecutionList:
        request = wire.ExecutionsRequest(job_id=job_id, offset=offset, limit=limit)
        return await self._call("job.executions", request, wire.ExecutionList)

    async def history(self, job_id: str) -> list[wire.JobEvent]:
        """Every event of the job, oldest first: page after page."""
        out: list[wire.JobEvent] = []
        after = 0
        while True:
            reply = await self.history_page(job_id, after)
            out.extend(reply.events)
            if not reply.next or reply.next <= after:
                return out
            after = reply.next

    async def history_page(self, job_id: str, after: int = 0, limit: int = 2000) -> wire.History:
        """The job's events after stream sequence `after`, at most `limit`; its `next` is the
        `after` of the page that follows (0: none does)."""
        request = wire.HistoryRequest(job_id=job_id, after=after, limit=limit)
        return await self._call("job.history", request, wire.History)

    async def wait(
        self,
        job_id: str,
        timeout: float | None = None,
        *,
        until: Callable[[wire.JobView], bool] | None = None,
        on_change: Callable[[wire.JobView], None] | None = None,
        version: int = 0,
    ) -> wire.JobView:
        """Until the job has ended, or `until(view)` holds; TimeoutError after `timeout` s.

        Follows the job's stored state (`shoal.v1.ns.<ns>.state.<job-id>.>`, where the server
        republishes every write it stores to the job's and its executions' records) and
        asks `job.describe` when a record says the job ended, when the records fall silent
        for 2 s, and, for `until` and `on_change`, after each change. `on_change(view)` is
        called with the first view and with every view whose state, message or execution
        counts differ from the last. `version`: ignore views of older versions of the job
        (the one a submit answered may not be shown everywhere yet).
        """
        if not job_id.startswith("j-"):  # a name: resolve it before listening
            job_id = (await self.describe(job_id)).id
        # Subscribed before the first read: the server sees the SUB first, so nothing is missed.
        inbox = await self._waiter.listen(self.namespace, job_id)
        try:
            async with asyncio.timeout(timeout):
                view = await self.describe(job_id)
                return await self._waiter.follow(
                    job_id, inbox, view=view, until=until, on_change=on_change, version=version
                )
        finally:
            await inbox.close()

    async def logs(
        self,
        job_id: str,
        *,
        follow: bool = False,
        execution_id: str = "",
        version: int = 0,
        node_id: str = "",
    ) -> AsyncIterator[LogLine]:
        """Output of one version's executions (0: the current one), in stream order, or of
        one execution (`execution_id`, any version).

        `node_id`: the node `execution_id` was placed on, if known (only its lines are read).
        `follow` goes on with new output (a replaced execution's successor too) and ends once
        the version has ended and every execution's output has been read; following version
        0 also follows the versions submitted meanwhile (`shared.logs.JobLogs`)."""
        reader = JobLogs(
            self.bus,
            self,
            job_id,
            version=version,
            follow=follow,
            execution_id=execution_id,
            namespace=self.namespace,
            node_id=node_id,
        ).lines()
        try:
            async for line in reader:
                yield line
        finally:
            await reader.aclose()

    async def results(self, job_id: str, dest: Path, version: int = 0) -> list[Path]:
        """Download and unpack the results of every execution of a version (0: the current
        one) into `dest/<execution-id>/`."""
        view = await self.describe(job_id, version)
        folders = []
        for execution in view.executions:
            ref = execution.result
            if ref is None and execution.compute_state in ("completed", "failed"):
                # Nothing was published (no ResultPaths, no publisher): the output lives in
                # the log stream and the exit code in the record.
                folders.append(await self._from_logs(view.id, execution, dest / execution.id))
                continue
            if ref is None or ref.publisher == "noop":
                continue
            target = dest / execution.id
            target.mkdir(parents=True, exist_ok=True)
            archive = target / ARCHIVE
            await self._fetch(ref, execution, archive, view.namespace)
            unpack(archive, target)
            archive.unlink()
            folders.append(target)
        return folders

    async def _from_logs(self, job_id: str, execution: wire.ExecutionView, target: Path) -> Path:
        target.mkdir(parents=True, exist_ok=True)
        streams = {"stdout": bytearray(), "stderr": bytearray()}
        async for line in self.logs(job_id, execution_id=execution.id, node_id=execution.node_id):
            streams.setdefault(line.stream, bytearray()).extend(line.data)
        for name, data in streams.items():
            (target / name).write_bytes(bytes(data))
        code = "" if execution.exit_code is None else f"{execution.exit_code}\n"
        (target / "exitCode").write_text(code)
        return target

    async def _fetch(
        self, ref: wire.ResultRef, execution: wire.ExecutionView, archive: Path, namespace: str
    ) -> None:
        if ref.publisher == "nats":
            # Copied from the node's bucket into the namespace's before the record named it.
            await fetch_result(self.bus, namespace, ref.location, archive)
        elif ref.publisher == "local":
            with archive.open("wb") as out:
                offset = 0
                while True:
                    req = wire.ResultChunkRequest(execution_id=execution.id, offset=offset)
                    raw = await self.bus.request(
                        subjects.compute_results(execution.node_id),
                        wire.encode(req),
                        timeout=self.timeout,
                    )
                    reply = wire.decode(raw, wire.ApiReply, what="results reply")
                    if not reply.ok:
                        err = reply.error or wire.ApiError(code="error", message="failed")
                        raise _error(err, f"{execution.node_id}: ")
                    chunk = wire.decode(reply.data, bytes, what="results chunk")
                    if not chunk:
                        break
                    out.write(chunk)
                    offset += len(chunk)
        else:
            where = RESULT_FETCHERS.get(ref.publisher)
            if where is None:
                raise ShoalError(f"cannot fetch results published to {ref.publisher!r}")
            fetch = getattr(importlib.import_module(where[0]), where[1])
            await fetch(ref, archive)

    # ---- nodes -------------------------------------------------------------------------------

    async def nodes(self) -> builtins.list[wire.NodeView]:
        """Every node, fetched a page at a time."""
        out: builtins.list[wire.NodeView] = []
        after = ""
        while True:
            page = await self._call(
                "node.list", wire.ListRequest(limit=1000, after=after), wire.NodeList
            )
            out.extend(page.nodes)
            if not page.next:
                return out
            after = page.next

    async def node(self, node_id: str) -> wire.NodeView:
        return await self._call("node.describe", wire.NodeRef(node_id=node_id), wire.NodeView)

    async def node_action(self, action: str, node_id: str) -> wire.NodeView:
        if action not in ("approve", "reject", "drain", "undrain", "remove"):
            raise ShoalError(f"unknown node action {action!r}")
        return await self._call(f"node.{action}", wire.NodeRef(node_id=node_id), wire.NodeView)


def new_job_id() -> str:
    return f"j-{uuid.uuid4()}"


def _error(err: wire.ApiError, where: str = "") -> ShoalError:
    """An error reply as the error it was raised as: an `invalid` one with every problem and
    its path (`Details`; from orchestrators before it, the `Problems` text without paths)."""
    problems = [Problem(p.path, p.message) for p in err.details] or [
        Problem("", text) for text in err.problems
    ]
    return error_from_code(err.code, where + err.message, problems)
