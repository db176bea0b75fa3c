"""KV.latest against a real nats-server: the newest entry under each of many patterns in a few
batched direct gets, past the server's 1,024 answers a request, and on a bucket made before
Shoal asked for direct gets."""

from __future__ import annotations

import asyncio

import nats
from nats.js.api import KeyValueConfig

from shared.bus import Bus, Entry
from shared.natsserver import EmbeddedNats


async def _newest(bus: Bus, bucket: str, keys: list[str]) -> dict[str, Entry]:
    """What a watch of each key reads: the reference `latest` is held to."""
    kv = await bus.kv(bucket)
    out = {}
    for key in keys:
        async for entry in kv.watch(key):
            if entry is None:
                break
            out[entry.key] = entry
    return out


async def test_latest_reads_the_newest_entry_under_each_pattern_delete_markers_too(
    bus: Bus,
) -> None:
    kv = await bus.kv("latest")
    for job in range(3):
        for execution in range(2):
            await kv.put(f"ns.j{job}.e{execution}", f"{job}{execution}".encode())
    await kv.put("ns.j0.e0", b"newer")
    await kv.delete("ns.j1.e1")
    await kv.put("other.j0.e0", b"not asked for")

    found = await kv.latest(["ns.j0.*", "ns.j1.*", "ns.j9.*"])

    assert found is not None
    by_key = {e.key: e for e in found}
    assert {k: e.value for k, e in by_key.items()} == {
        "ns.j0.e0": b"newer",
        "ns.j0.e1": b"01",
        "ns.j1.e0": b"10",
        "ns.j1.e1": None,
    }
    stored = await _newest(bus, "latest", list(by_key))
    assert {k: e.revision for k, e in by_key.items()} == {k: e.revision for k, e in stored.items()}
    assert await kv.latest(["ns.nothing.*"]) == []
    assert await kv.latest([]) == []


async def test_latest_past_the_server_s_answers_a_request_still_reads_everything(
    bus: Bus,
) -> None:
    kv = await bus.kv("many")
    # 300 jobs of 5 executions: 256 patterns a request would be 1,280 answers (over 1,024),
    # so the request is split; one job of 1,100: over the cap alone, so it is watched.
    writes = [kv.put(f"ns.j{job}.e{e}", b"x") for job in range(300) for e in range(5)]
    writes += [kv.put(f"ns.big.e{e}", b"y") for e in range(1_100)]
    for at in range(0, len(writes), 500):
        await asyncio.gather(*writes[at : at + 500])

    found = await kv.latest([f"ns.j{job}.*" for job in range(300)] + ["ns.big.*"])

    assert found is not None
    keys = [e.key for e in found]
    assert len(keys) == len(set(keys)) == 300 * 5 + 1_100
    assert {e.value for e in found if e.key.startswith("ns.big.")} == {b"y"}


async def test_a_bucket_made_without_direct_gets_is_given_them(
    bus: Bus, nats_server: EmbeddedNats
) -> None:
    nc = await nats.connect(nats_server.url)
    try:  # as a Shoal before this one made its buckets
        js = nc.jetstream()
        await js.create_key_value(KeyValueConfig(bucket="older", direct=False))
        info = await js.stream_info("KV_older")
        assert not info.config.allow_direct
        kv = await bus.kv("older")
        await kv.put("ns.j.e", b"v")

        found = await kv.latest(["ns.j.*"])

        assert found is not None and [(e.key, e.value) for e in found] == [("ns.j.e", b"v")]
        assert (await js.stream_info("KV_older")).config.allow_direct
    finally:
        await nc.close()
