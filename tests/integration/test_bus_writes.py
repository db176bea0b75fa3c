"""Requests and stored writes through the bus (KV and stream publishes) against a real
nats-server: the answer or sequence each got, and the error each refusal turns into."""

from __future__ import annotations

import asyncio

import pytest

from shared.bus import Bus, Entry, Message
from shared.errors import Conflict, ShoalError, Unavailable
from shared.natsserver import EmbeddedNats


async def test_kv_create_update_put_return_the_stored_revision(bus: Bus) -> None:
    kv = await bus.kv("writes")
    first = await kv.create("a.b", b"one")
    second = await kv.update("a.b", b"two", first)
    third = await kv.put("a.b", b"three")
    assert first < second < third
    entry = await kv.get("a.b")
    assert entry is not None
    assert (entry.value, entry.revision) == (b"three", third)


async def test_kv_create_refuses_an_existing_key(bus: Bus) -> None:
    kv = await bus.kv("writes")
    rev = await kv.create("k", b"mine")
    with pytest.raises(Conflict, match="writes/k already exists"):
        await kv.create("k", b"theirs")
    entry = await kv.get("k")
    assert entry is not None
    assert (entry.value, entry.revision) == (b"mine", rev)


async def test_kv_create_writes_over_a_deleted_key(bus: Bus) -> None:
    kv = await bus.kv("writes")
    await kv.create("k", b"old")
    await kv.delete("k")
    rev = await kv.create("k", b"new")
    entry = await kv.get("k")
    assert entry is not None
    assert (entry.value, entry.revision) == (b"new", rev)
    with pytest.raises(Conflict, match="writes/k already exists"):  # and only once
        await kv.create("k", b"again")
    await kv.delete("k")
    results = await asyncio.gather(
        *(kv.create("k", str(i).encode()) for i in range(10)), return_exceptions=True
    )
    lost = [r for r in results if isinstance(r, Conflict)]
    assert len(lost) == 9 and all("writes/k already exists" in str(r) for r in lost)


async def test_kv_update_is_compare_and_swap(bus: Bus) -> None:
    kv = await bus.kv("writes")
    rev = await kv.create("k", b"v1")
    await kv.update("k", b"v2", rev)
    with pytest.raises(Conflict, match="update writes/k: changed concurrently"):
        await kv.update("k", b"stale", rev)
    entry = await kv.get("k")
    assert entry is not None and entry.value == b"v2"


async def test_kv_delete_with_a_revision_is_compare_and_swap(bus: Bus) -> None:
    kv = await bus.kv("writes")
    rev = await kv.create("k", b"v1")
    newer = await kv.update("k", b"v2", rev)
    with pytest.raises(Conflict, match="delete writes/k: changed concurrently"):
        await kv.delete("k", rev)
    entry = await kv.get("k")
    assert entry is not None and entry.value == b"v2"
    await kv.delete("k", newer)
    assert await kv.get("k") is None
    with pytest.raises(ShoalError, match="'a b' is not a valid key"):
        await kv.delete("a b")


async def test_concurrent_creates_of_one_key_one_wins(bus: Bus) -> None:
    kv = await bus.kv("writes")
    results = await asyncio.gather(
        *(kv.create("k", str(i).encode()) for i in range(20)), return_exceptions=True
    )
    won = [r for r in results if isinstance(r, int)]
    lost = [r for r in results if isinstance(r, Conflict)]
    assert len(won) == 1 and len(lost) == 19


async def test_many_writes_in_flight_each_get_their_own_answer(bus: Bus) -> None:
    kv = await bus.kv("writes")
    revs = await asyncio.gather(*(kv.create(f"k{i}", str(i).encode()) for i in range(500)))
    assert sorted(revs) == list(range(1, 501))
    for i in (0, 250, 499):
        entry = await kv.get(f"k{i}")
        assert entry is not None and entry.value == str(i).encode()


async def test_kv_refuses_an_invalid_key_before_sending(bus: Bus) -> None:
    kv = await bus.kv("writes")
    for key in ("", ".a", "a.", "a..b", "a b", "a.*", "a.>"):
        with pytest.raises(ShoalError, match="not a valid key"):
            await kv.put(key, b"x")


async def test_js_publish_dedups_by_message_id(bus: Bus) -> None:
    await bus.ensure_stream("S", ["s.>"])
    first = await bus.js_publish("s.one", b"x", msg_id="m-1")
    again = await bus.js_publish("s.one", b"x", msg_id="m-1")
    other = await bus.js_publish("s.one", b"x", msg_id="m-2")
    assert first == again and other == first + 1


async def test_js_publish_without_a_stream_is_unavailable(bus: Bus) -> None:
    with pytest.raises(Unavailable, match=r"publish nowhere.x: no stream takes this subject"):
        await bus.js_publish("nowhere.x", b"x")


async def test_unanswered_requests_and_writes_time_out(bus: Bus) -> None:
    # A plain subscriber takes each message and never answers, as no stream or service would.
    inbox = await bus.subscription("silent.>")
    try:
        with pytest.raises(Unavailable, match=r"publish silent\.x: timed out waiting for NATS"):
            await bus.js_publish("silent.x", b"x", timeout=0.2)
        with pytest.raises(Unavailable, match=r"request silent\.y: timed out waiting for NATS"):
            await bus.request("silent.y", b"y", timeout=0.2)
        got = [await inbox.next(timeout=1) for _ in range(2)]
        assert [m.subject for m in got if m] == ["silent.x", "silent.y"]
        assert not bus._replies._waiting  # nothing left behind for answers that never came
    finally:
        await inbox.close()


async def test_a_write_the_stream_refuses_says_why(bus: Bus) -> None:
    await bus.ensure_stream("T", ["t.>"])
    with pytest.raises(ShoalError, match=r"put t.a: NATS refused the write .*expected stream"):
        await bus._replies.store("t.a", b"x", {"Nats-Expected-Stream": "U"}, what="put t.a")
    with pytest.raises(ShoalError, match=r"publish t.b: .*payload"):
        await bus.js_publish("t.b", b"x" * (2 * 1024 * 1024))


async def test_requests_in_flight_each_get_their_own_answer(bus: Bus) -> None:
    async def echo(msg: Message) -> None:
        await bus.respond(msg, msg.data[::-1])

    await bus.subscribe("echo", echo)
    answers = await asyncio.gather(*(bus.request("echo", f"{i}-x".encode()) for i in range(300)))
    assert answers == [f"{i}-x".encode()[::-1] for i in range(300)]


async def test_a_request_nobody_listens_to_is_unavailable(bus: Bus) -> None:
    with pytest.raises(Unavailable, match=r"request nobody\.here: nobody is listening"):
        await bus.request("nobody.here", b"x")


async def test_watch_an_empty_bucket_is_caught_up_at_once(bus: Bus) -> None:
    kv = await bus.kv("watched")
    watch = kv.watch()
    assert await asyncio.wait_for(anext(watch), 5) is None
    rev = await kv.put("a", b"1")
    assert await asyncio.wait_for(anext(watch), 5) == Entry("a", b"1", rev)
    await watch.aclose()


async def test_watch_replays_current_values_then_follows_changes(bus: Bus) -> None:
    kv = await bus.kv("watched")
    await kv.put("a", b"old")
    a = await kv.put("a", b"1")
    b = await kv.put("b.c", b"2")
    gone = await kv.put("d", b"3")
    await kv.delete("d")
    watch = kv.watch()
    seen = [await asyncio.wait_for(anext(watch), 5) for _ in range(4)]
    deleted = seen[2]
    assert deleted is not None and deleted.key == "d" and deleted.value is None
    assert deleted.revision > gone
    assert seen[:2] == [Entry("a", b"1", a), Entry("b.c", b"2", b)]
    assert seen[3] is None  # caught up: everything after this is a change
    later = await kv.update("a", b"new", a)
    assert await asyncio.wait_for(anext(watch), 5) == Entry("a", b"new", later)
    await kv.delete("b.c")
    after = await asyncio.wait_for(anext(watch), 5)
    assert after is not None and (after.key, after.value) == ("b.c", None)
    await watch.aclose()


async def test_watch_a_pattern_and_keys(bus: Bus) -> None:
    kv = await bus.kv("watched")
    await kv.put("job1.e1", b"x")
    await kv.put("job1.e2", b"y")
    await kv.put("job2.e3", b"z")
    await kv.put("job1.e4", b"w")
    await kv.delete("job1.e4")
    assert sorted(await kv.keys("job1.>")) == ["job1.e1", "job1.e2"]
    assert sorted(await kv.keys()) == ["job1.e1", "job1.e2", "job2.e3"]
    assert await (await bus.kv("empty")).keys() == []


async def test_an_inbox_hands_out_messages_in_order_and_none_when_quiet(bus: Bus) -> None:
    inbox = await bus.subscription("box.>")
    try:
        assert await inbox.next(timeout=0.05) is None
        for i in range(100):
            await bus.publish(f"box.{i}", str(i).encode())
        got = [await inbox.next(timeout=5) for _ in range(100)]
        assert [m.data for m in got if m] == [str(i).encode() for i in range(100)]
        assert got[7] is not None and got[7].subject == "box.7"

        async def later() -> None:
            await asyncio.sleep(0.1)
            await bus.publish("box.late", b"late")

        waiting = asyncio.ensure_future(inbox.next(timeout=10))
        await later()
        woken = await waiting
        assert woken is not None and woken.data == b"late"
        assert await inbox.next(timeout=0.05) is None
    finally:
        await inbox.close()


async def test_an_inbox_of_a_closed_connection_says_so(nats_server: EmbeddedNats) -> None:
    own = await Bus.connect(nats_server.url)
    inbox = await own.subscription("box.>")
    await own.close()
    with pytest.raises(Unavailable, match=r"subscription box\.>: connection closed"):
        await inbox.next(timeout=None)
