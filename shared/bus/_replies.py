"""Requests and stored writes answered on one wildcard inbox: the bus's hot path.

nats-py's `request()` (and `js.publish()`, built on it) draws a random token per request (a
`getrandom` system call), waits through `asyncio.wait_for`, and decodes a JetStream ack with
`json` into a dataclass. Shoal sends about a dozen such messages per job, so that overhead was
a fifth of the orchestrator's CPU under load. Here a counter names the reply, a timer handle
bounds the wait, and msgspec reads the ack. Errors are Shoal's, worded as `map_nats_errors`'s.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from typing import Any, TypeVar

import msgspec
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from shared.bus._errors import map_nats_errors
from shared.errors import Conflict, NoResponders, NotFound, ShoalError, Unavailable

_WRONG_LAST_SEQUENCE = (10071, 10164)  # JSStreamWrongLastSequenceErr(Constant)
_NOBODY = "nobody is listening (is the service running?)"
_REFUSED = re.compile(r'permissions violation for publish to "([^"]+)"', re.IGNORECASE)


class _ApiError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class _PubAck(msgspec.Struct):
    seq: int = 0
    error: _ApiError | None = None


_decode_ack = msgspec.json.Decoder(_PubAck).decode
T = TypeVar("T")


class Replies:
    """Sends requests and matches their answers, one subscription for all of them."""

    def __init__(self, nc: NatsClient) -> None:
        self._nc = nc
        self._prefix = ""
        # reply subject -> (its future, the subject asked, what the caller was doing)
        self._waiting: dict[str, tuple[asyncio.Future[Msg], str, str]] = {}
        # reply subject -> (the answers so far, set once the last one is in, the subject asked,
        # what the caller was doing)
        self._collecting: dict[str, tuple[list[Msg], asyncio.Future[None], str, str]] = {}
        self._count = itertools.count(1)
        self._opening = asyncio.Lock()

    async def request(
        self,
        subject: str,
        data: bytes,
        headers: dict[str, str] | None = None,
        *,
        what: str,
        timeout: float = 5.0,
    ) -> Msg:
        """The answer; Unavailable if nobody listens on `subject` or none comes in time."""
        if not self._prefix:
            await self._open()
        inbox = f"{self._prefix}{next(self._count)}"
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Msg] = loop.create_future()
        self._waiting[inbox] = (answer, subject, what)
        try:
            msg = await self._sent(subject, data, inbox, headers, answer, what, timeout)
        finally:
            self._waiting.pop(inbox, None)
        if msg.headers and msg.headers.get("Status") == "503":
            raise NoResponders(f"{what}: {_NOBODY}")
        return msg

    async def collect(
        self, subject: str, data: bytes, *, what: str, timeout: float = 5.0
    ) -> list[Msg]:
        """Every answer to a request that is answered by several messages, the last of them
        one with a status header (a JetStream batched direct get ends with `204 EOB`), that
        one included. Unavailable if the last one does not come in time."""
        if not self._prefix:
            await self._open()
        inbox = f"{self._prefix}{next(self._count)}"
        loop = asyncio.get_running_loop()
        answers: list[Msg] = []
        ended: asyncio.Future[None] = loop.create_future()
        self._collecting[inbox] = (answers, ended, subject, what)
        try:
            await self._sent(subject, data, inbox, None, ended, what, timeout)
        finally:
            self._collecting.pop(inbox, None)
        return answers

    async def _sent(
        self,
        subject: str,
        data: bytes,
        inbox: str,
        headers: dict[str, str] | None,
        done: asyncio.Future[T],
        what: str,
        timeout: float,
    ) -> T:
        """Publish with `inbox` for the answers; `done`'s result, or Unavailable past
        `timeout`."""
        with map_nats_errors(what):
            await self._nc.publish(subject, data, reply=inbox, headers=headers)
        expiry = asyncio.get_running_loop().call_later(timeout, _expire, done)
        try:
            return await done
        except TimeoutError:
            raise Unavailable(f"{what}: timed out waiting for NATS") from None
        finally:
            expiry.cancel()

    async def store(
        self,
        subject: str,
        data: bytes,
        headers: dict[str, str] | None,
        *,
        what: str,
        timeout: float = 5.0,
    ) -> int:
        """Publish into a stream; the sequence it stored the message at. Conflict when an
        expected-last-sequence header did not hold, Unavailable when no stream answers."""
        try:
            msg = await self.request(subject, data, headers, what=what, timeout=timeout)
        except NoResponders:
            raise Unavailable(f"{what}: no stream takes this subject") from None
        try:
            ack = _decode_ack(msg.data)
        except msgspec.DecodeError as exc:
            raise ShoalError(f"{what}: unreadable acknowledgement {msg.data[:200]!r}") from exc
        error = ack.error
        if error is None:
            return ack.seq
        if error.err_code in _WRONG_LAST_SEQUENCE:
            raise Conflict(f"{what}: changed concurrently ({error.description})")
        if error.code == 404:
            raise NotFound(f"{what}: {error.description}")
        if error.code == 503:
            raise Unavailable(f"{what}: JetStream is not available ({error.description})")
        raise ShoalError(f"{what}: NATS refused the write ({error.description})")

    async def _open(self) -> None:
        async with self._opening:
            if self._prefix:
                return
            prefix = self._nc.new_inbox() + "."
            with map_nats_errors("subscribe to replies"):
                await self._nc.subscribe(
                    prefix + "*", cb=self._on_reply, pending_msgs_limit=1_000_000
                )
            self._prefix = prefix

    async def _on_reply(self, msg: Msg) -> None:
        waiting = self._waiting.pop(msg.subject, None)
        if waiting is not None:
            if not waiting[0].done():
                waiting[0].set_result(msg)
            return
        collecting = self._collecting.get(msg.subject)
        if collecting is not None:
            answers, ended, _, _ = collecting
            if ended.done():  # after the last (or a refusal): nobody's
                return
            answers.append(msg)
            if msg.headers and "Status" in msg.headers:
                ended.set_result(None)

    def refused(self, error: str) -> None:
        """The server refused a publish (its -ERR reaches only the connection's error
        callback): fail the requests sent there now, rather than at their timeout."""
        found = _REFUSED.search(error)
        if found is None:
            return
        subject = found.group(1).lower()  # nats-py hands the server's text over lower-cased
        waiting: list[tuple[asyncio.Future[Any], str, str]] = list(self._waiting.values())
        waiting += [(ended, asked, what) for _, ended, asked, what in self._collecting.values()]
        for answer, asked, what in waiting:
            if asked.lower() == subject and not answer.done():
                answer.set_exception(
                    ShoalError(
                        f"{what}: NATS refused it: this identity may not publish to "
                        f"{asked} (check its credentials and permissions)"
                    )
                )


def _expire(answer: asyncio.Future[Any]) -> None:
    if not answer.done():
        answer.set_exception(TimeoutError())
