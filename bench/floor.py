"""The floor of Shoal's protocol: a skeleton that sends a trivial job's messages and nothing
else, to measure how fast any Python orchestrator keeping DESIGN.md's contract could go here.

Per job it does what the contract requires and what the real orchestrator measures (13
messages out, 11 in through the orchestrator, `throughput`'s `orchestrator_nats_msgs_per_job`):
the submit request and its answer; the job's record created and compare-and-swapped once
(`shoal-jobs`), the execution's created and swapped once (`shoal-executions`), each write
acknowledged and seen again on the orchestrator's watch of the bucket; the bid request and its
answer; the node's durable report (a stream, pulled and acknowledged); six history events.
There is no logic: no spec parsing or validation, no scheduling, no node registry, no
heartbeats, no retries, no leader lease. Transport is Shoal's own bus (the product's hot path).
Processes are laid out as in `throughput`: nats-server, one orchestrator, one agent process
(3 nodes), the client here.

.venv/bin/python -m bench.floor                  # 4 rounds of 1000 jobs
.venv/bin/python -m bench.floor --n 2000 --rounds 3 --celery   # alternate with Celery rounds
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

from bench.procs import BIN, Child, free_port, usage
from bench.scenarios import per_unit, trivial
from bench.stack import traffic
from cli.common import run
from shared.bus import Bus, Message, StreamMessage
from shared.errors import ShoalError
from shared.natsserver import EmbeddedNats

NODES = ("floor-0", "floor-1", "floor-2")
EVENT = b'{"kind":"%s","job":"%s"}'


class Submit(msgspec.Struct):
    spec: msgspec.Raw


class Record(msgspec.Struct):
    """About the size of a job or execution record: the spec travels in both."""

    id: str
    state: str
    spec: msgspec.Raw
    node: str = ""
    updated_at: float = 0.0


class Bid(msgspec.Struct):
    job: str
    execution: str
    spec: msgspec.Raw


class Report(msgspec.Struct):
    job: str
    execution: str
    state: str


_encode = msgspec.json.encode


async def orchestrator(url: str, concurrency: int) -> None:
    bus = await Bus.connect(url, name="floor-orchestrator")
    jobs, executions = await bus.kv("floor-jobs"), await bus.kv("floor-executions")
    await bus.ensure_stream("FLOOR_EVENTS", ["floor.events.>"])
    await bus.ensure_stream("FLOOR_UPDATES", ["floor.node.*.update"])
    mirror: dict[str, bytes] = {}
    revisions: dict[str, tuple[int, int, bytes]] = {}  # execution -> job rev, exec rev, spec
    numbers, nodes = itertools.count(), itertools.cycle(NODES)

    async def follow(kv: Any) -> None:
        async for entry in kv.watch():
            if entry is not None and entry.value is not None:
                mirror[entry.key] = entry.value

    async def submit(msg: Message) -> None:
        spec = msgspec.json.decode(msg.data, type=Submit).spec
        number = next(numbers)
        job, execution, node = f"j-{number}", f"e-{number}", next(nodes)
        job_rev = await jobs.create(job, _encode(Record(job, "Pending", spec)))
        await bus.publish(f"floor.events.{job}", EVENT % (b"submitted", job.encode()))
        record = Record(execution, "Offered", spec, node, time.time())
        exec_rev = await executions.create(f"{job}.{execution}", _encode(record))
        revisions[execution] = (job_rev, exec_rev, bytes(spec))
        await bus.request(f"floor.compute.{node}.bid", _encode(Bid(job, execution, spec)))
        await bus.publish(f"floor.events.{job}", EVENT % (b"placed", job.encode()))
        await bus.respond(msg, _encode({"job_id": job}))

    async def apply(msg: StreamMessage) -> None:
        report = msgspec.json.decode(msg.data, type=Report)
        job, execution = report.job, report.execution
        job_rev, exec_rev, spec = revisions.pop(execution)
        subject = f"floor.events.{job}"
        await bus.publish(subject, EVENT % (b"running", job.encode()))
        done = Record(execution, report.state, msgspec.Raw(spec), "", time.time())
        await executions.update(f"{job}.{execution}", _encode(done), exec_rev)
        await bus.publish(subject, EVENT % (b"execution-completed", job.encode()))
        await bus.publish(subject, EVENT % (b"job-running", job.encode()))
        await jobs.update(job, _encode(Record(job, "Completed", msgspec.Raw(spec))), job_rev)
        await bus.publish(subject, EVENT % (b"completed", job.encode()))
        await msg.ack()

    async def apply_all(msgs: list[StreamMessage]) -> None:
        await asyncio.gather(*(apply(m) for m in msgs))

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(follow(jobs))
        tasks.create_task(follow(executions))
        await bus.subscribe("floor.api.submit", submit, "floor-api", concurrency=concurrency)
        tasks.create_task(
            bus.consume("FLOOR_UPDATES", "floor-applier", "floor.node.*.update", apply_all)
        )


async def agent(url: str) -> None:
    bus = await Bus.connect(url, name="floor-agent")

    async def bid(msg: Message) -> None:
        offer = msgspec.json.decode(msg.data, type=Bid)
        await bus.respond(msg, b'{"accepted":true}')
        node = msg.subject.split(".")[2]
        report = _encode(Report(offer.job, offer.execution, "Completed"))
        await bus.js_publish(f"floor.node.{node}.update", report, msg_id=f"{offer.execution}:c")

    for node in NODES:
        await bus.subscribe(f"floor.compute.{node}.bid", bid, concurrency=64)
    await asyncio.Event().wait()


async def _throughput(bus: Bus, n: int, spec: bytes) -> float:
    """Jobs/s of `n` jobs submitted at once, until each one's last event arrives."""
    ended: set[str] = set()
    all_ended = asyncio.Event()

    async def on_event(msg: Message) -> None:
        if msg.data.startswith(b'{"kind":"completed"'):
            ended.add(msg.subject.rsplit(".", 1)[1])
            if len(ended) >= n:
                all_ended.set()

    subscription = await bus.subscribe("floor.events.>", on_event)
    try:
        await bus.flush()
        t0 = time.perf_counter()
        submits = (bus.request("floor.api.submit", spec, timeout=120) for _ in range(n))
        await asyncio.gather(*submits)
        await asyncio.wait_for(all_ended.wait(), 300)
        return n / (time.perf_counter() - t0)
    finally:
        await subscription.unsubscribe()


async def _latency(bus: Bus, n: int, spec: bytes) -> list[float]:
    """Seconds of each of `n` jobs one after another, from the submit to its last event."""
    ended: dict[str, asyncio.Future[None]] = {}
    loop = asyncio.get_running_loop()

    async def on_event(msg: Message) -> None:
        if msg.data.startswith(b'{"kind":"completed"'):
            job = msg.subject.rsplit(".", 1)[1]
            ended.setdefault(job, loop.create_future()).set_result(None)

    subscription = await bus.subscribe("floor.events.>", on_event)
    samples = []
    try:
        await bus.flush()
        for _ in range(n):
            t0 = time.perf_counter()
            job = msgspec.json.decode(await bus.request("floor.api.submit", spec))["job_id"]
            await asyncio.wait_for(ended.setdefault(job, loop.create_future()), 30)
            samples.append(time.perf_counter() - t0)
    finally:
        await subscription.unsubscribe()
    return samples


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    spec = msgspec.json.encode({"spec": trivial()})
    with tempfile.TemporaryDirectory(prefix="shoal-floor-") as tmp:
        workdir = Path(tmp)
        monitor = free_port()
        server = EmbeddedNats(workdir / "nats", extra_args=("-m", str(monitor)))
        await server.start()
        me = [str(BIN / "python"), "-m", "bench.floor", "--url", server.url]
        children = [
            Child(
                "orchestrator",
                [*me, "--role", "orchestrator", "--concurrency", str(args.concurrency)],
                workdir / "logs",
            ),
            Child("agent", [*me, "--role", "agent"], workdir / "logs"),
        ]
        peer = None
        bus = await Bus.connect(server.url, name="floor-client")
        try:
            while True:  # both children up: a job goes through
                try:
                    await asyncio.wait_for(_latency(bus, 1, spec), 1.0)
                    break
                except (TimeoutError, ShoalError):
                    for child in children:
                        child.check()
                    await asyncio.sleep(0.1)
            await _latency(bus, 50, spec)  # warm-up
            if args.celery:
                from bench.celery_bench import CeleryPeer

                peer = CeleryPeer(workdir / "celery")
                peer.start()
            return {
                "orchestrator_msgs_per_job": await _messages(bus, spec, monitor),
                "throughput": await _throughput_rounds(args, bus, spec, children, server, peer),
                "latency": await _latency_rounds(args, bus, spec, peer),
            }
        finally:
            if peer is not None:
                peer.stop()
            await bus.close()
            for child in children:
                child.stop_sync()
            await server.stop()


async def _messages(bus: Bus, spec: bytes, monitor: int, n: int = 200) -> dict[str, float]:
    """What the skeleton orchestrator sent and received per job: to set beside `throughput`'s
    `orchestrator_nats_msgs_per_job` (the same figures for the real one)."""
    before = traffic(monitor, "floor-orchestrator")
    await _throughput(bus, n, spec)
    after = traffic(monitor, "floor-orchestrator")
    return per_unit(before, after, n)


async def _throughput_rounds(
    args: argparse.Namespace,
    bus: Bus,
    spec: bytes,
    children: list[Child],
    server: EmbeddedNats,
    peer: Any,
) -> dict[str, Any]:
    """Rounds of `--n` jobs at once, who goes first alternating with Celery's."""
    rounds: list[dict[str, Any]] = []
    for i in range(args.rounds):
        celery = peer.throughput(args.n)["tasks_per_s"] if peer and i % 2 else None
        before = [c.usage().cpu for c in children] + [usage(server.pid or 0).cpu]
        client0 = time.process_time()
        rate = await _throughput(bus, args.n, spec)
        after = [c.usage().cpu for c in children] + [usage(server.pid or 0).cpu]
        cpu = [b - a for a, b in zip(before, after, strict=True)]
        cpu.append(time.process_time() - client0)
        if peer and not i % 2:
            celery = peer.throughput(args.n)["tasks_per_s"]
        names = ("orchestrator", "agent", "nats", "client")
        per_job = {k: round(c * 1000 / args.n, 3) for k, c in zip(names, cpu, strict=True)}
        rounds.append(
            {
                "jobs_per_s": round(rate, 1),
                "celery_tasks_per_s": celery,
                "cpu_ms_per_job": per_job,
                "cpu_ms_per_job_total": round(sum(per_job.values()), 3),
            }
        )
        print(json.dumps(rounds[-1]), file=sys.stderr)
    return {"n": args.n, **_medians(rounds, "jobs_per_s", "celery_tasks_per_s")}


async def _latency_rounds(
    args: argparse.Namespace, bus: Bus, spec: bytes, peer: Any
) -> dict[str, Any]:
    """Rounds of `--round-n` jobs one after another, alternating with Celery's."""
    rounds: list[dict[str, Any]] = []
    for i in range(args.latency_rounds):
        celery = statistics.median(peer.latency(args.round_n)) if peer and i % 2 else None
        p50 = statistics.median(await _latency(bus, args.round_n, spec))
        if peer and not i % 2:
            celery = statistics.median(peer.latency(args.round_n))
        rounds.append(
            {"p50_ms": round(p50 * 1000, 2), "celery_p50_ms": celery and round(celery * 1000, 2)}
        )
        print(json.dumps(rounds[-1]), file=sys.stderr)
    return {"round_n": args.round_n, **_medians(rounds, "p50_ms", "celery_p50_ms")}


def _medians(rounds: list[dict[str, Any]], mine: str, celery: str) -> dict[str, Any]:
    """The rounds, the median of `mine`, and of its ratio to Celery's where Celery ran."""
    out: dict[str, Any] = {
        "rounds": rounds,
        f"median_{mine}": statistics.median(r[mine] for r in rounds),
    }
    if all(r[celery] for r in rounds):
        ratios = [r[mine] / r[celery] for r in rounds]
        out["median_ratio_to_celery"] = round(statistics.median(ratios), 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    parser.add_argument("--role", choices=("orchestrator", "agent"))
    parser.add_argument("--url", default="")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=4, help="throughput rounds")
    parser.add_argument("--latency-rounds", type=int, default=12)
    parser.add_argument("--round-n", type=int, default=50, help="jobs per latency round")
    parser.add_argument(
        "--concurrency", type=int, default=256, help="submits the orchestrator handles at once"
    )
    parser.add_argument("--celery", action="store_true", help="alternate with Celery rounds")
    args = parser.parse_args()
    if args.role == "orchestrator":
        run(orchestrator(args.url, args.concurrency))
    elif args.role == "agent":
        run(agent(args.url))
    else:
        print(json.dumps(run(_main(args)), indent=1))


if __name__ == "__main__":
    main()
