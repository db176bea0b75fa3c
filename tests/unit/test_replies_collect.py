"""Replies.collect: a request answered by several messages, the last with a status header; and
a refused publish ends it at once (pure logic: an in-memory stand-in for nats-py's client)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from shared.bus._replies import Replies
from shared.errors import ShoalError, Unavailable


class _Connection:
    """What Replies uses of nats-py's client: an inbox, a subscription, a publish."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.published = asyncio.Event()
        self.deliver: Any = None

    def new_inbox(self) -> str:
        return "_INBOX.test"

    async def subscribe(self, subject: str, cb: Any, pending_msgs_limit: int) -> None:
        self.deliver = cb

    async def publish(
        self, subject: str, data: bytes, reply: str = "", headers: Any = None
    ) -> None:
        self.sent.append((subject, reply))
        self.published.set()


def _msg(reply_to: str, data: bytes, headers: dict[str, str] | None = None) -> Msg:
    return Msg(cast(Client, None), subject=reply_to, data=data, headers=headers)


async def test_collect_gathers_every_answer_up_to_the_one_with_a_status() -> None:
    conn = _Connection()
    replies = Replies(cast(Client, conn))
    asked = asyncio.create_task(replies.collect("$JS.API.DIRECT.GET.S", b"{}", what="read S"))
    await conn.published.wait()
    inbox = conn.sent[0][1]
    for i in range(3):
        await conn.deliver(_msg(inbox, str(i).encode(), {"Nats-Sequence": str(i)}))
    await conn.deliver(_msg(inbox, b"", {"Status": "204", "Description": "EOB"}))
    await conn.deliver(_msg(inbox, b"late"))  # after the end: nobody's
    answers = await asyncio.wait_for(asked, 5)
    assert [m.data for m in answers] == [b"0", b"1", b"2", b""]


async def test_a_refused_collect_fails_at_once_with_the_refusal() -> None:
    conn = _Connection()
    replies = Replies(cast(Client, conn))
    subject = "$JS.API.DIRECT.GET.KV_x"
    asked = asyncio.create_task(replies.collect(subject, b"{}", what="read x", timeout=30))
    await conn.published.wait()
    replies.refused(f'nats: permissions violation for publish to "{subject.lower()}"')
    with pytest.raises(ShoalError, match="read x: NATS refused it: this identity may not"):
        await asyncio.wait_for(asked, 5)


async def test_a_collect_with_no_last_answer_times_out() -> None:
    conn = _Connection()
    replies = Replies(cast(Client, conn))
    with pytest.raises(Unavailable, match="read x: timed out"):
        await replies.collect("$JS.API.DIRECT.GET.KV_x", b"{}", what="read x", timeout=0.05)
