"""A KV bucket's newest values under many keys in a few requests: JetStream's batched direct get.

One `$JS.API.DIRECT.GET` request with `multi_last` answers with the newest message under each
of its subjects (wildcards allowed), one message each, then a `204 EOB` status; `404` when none
matched, `413` past 1,024 answers. The server has it from 2.11, and only for a stream that
allows direct gets. A start reads its unsettled jobs' executions this way: one request per
256 jobs where a watch per job made a consumer on the server for each.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec
from nats.aio.msg import Msg

from shared.bus._errors import map_nats_errors
from shared.bus._replies import Replies
from shared.errors import ShoalError

log = logging.getLogger(__name__)

PER_REQUEST = 256  # patterns a request asks for; the server answers at most 1,024 messages
_DELETED = ("DEL", "PURGE")
# (key, value or None for a delete marker, revision) of each entry read
Found = list[tuple[str, bytes | None, int]]


class TooMany(ShoalError):
    """Over the server's 1,024 answers a request: ask for fewer patterns at once."""


async def newest(
    replies: Replies, bucket: str, patterns: Sequence[str], *, timeout: float = 10.0
) -> Found:
    """The newest entry under each of `patterns` (keys, `*` and `>` allowed) that has one; at
    most 1,024 of them (TooMany)."""
    prefix = f"$KV.{bucket}."
    request = msgspec.json.encode({"multi_last": [prefix + p for p in patterns]})
    what = f"read {bucket} ({len(patterns)} keys at once)"
    answers = await replies.collect(
        f"$JS.API.DIRECT.GET.KV_{bucket}", request, what=what, timeout=timeout
    )
    out: Found = []
    for msg in answers:
        headers = msg.headers or {}
        status = headers.get("Status")
        if status is None:
            out.append(_entry(msg, headers, prefix, what))
        elif status == "413":
            raise TooMany(f"{what}: more than the server answers at once")
        elif status not in ("204", "404"):  # the end; none matched
            raise ShoalError(f"{what}: {status} {headers.get('Description', '')}".rstrip())
    return out


def _entry(
    msg: Msg, headers: dict[str, str], prefix: str, what: str
) -> tuple[str, bytes | None, int]:
    try:
        subject, sequence = headers["Nats-Subject"], int(headers["Nats-Sequence"])
    except (KeyError, ValueError):
        raise ShoalError(f"{what}: an answer without its subject or sequence") from None
    if not subject.startswith(prefix):
        raise ShoalError(f"{what}: an answer for {subject}, not this bucket")
    value = None if headers.get("KV-Operation") in _DELETED else msg.data
    return subject[len(prefix) :], value, sequence


async def read_newest(
    replies: Replies,
    bucket: str,
    patterns: Sequence[str],
    one_by_one: Callable[[str], Awaitable[Found]],
) -> Found:
    """`newest` over any number of patterns: PER_REQUEST at a time, a request past the
    server's cap split in two, and a single pattern past it (a job of thousands of
    executions) read with `one_by_one`."""
    out: Found = []
    pending = [list(patterns[i : i + PER_REQUEST]) for i in range(0, len(patterns), PER_REQUEST)]
    while pending:
        chunk = pending.pop()
        try:
            out += await newest(replies, bucket, chunk)
        except TooMany:
            if len(chunk) == 1:
                out += await one_by_one(chunk[0])
            else:
                half = len(chunk) // 2
                pending += [chunk[:half], chunk[half:]]
    return out


async def direct_gets_allowed(js: Any, bucket: str) -> bool | None:
    """Whether the bucket is read with batched direct gets: only a stream of one replica, since
    on others any replica answers a direct get, and one may not have the newest writes yet.
    One made before Shoal asked for direct gets is given them here. None: not known (the
    stream could not be read or changed); a watch per pattern meanwhile."""
    stream = f"KV_{bucket}"
    try:
        with map_nats_errors(f"allow direct gets on {stream}"):
            config = (await js.stream_info(stream)).config
            if config.num_replicas == 1 and not config.allow_direct:
                config.allow_direct = True
                await js.update_stream(config)
    except ShoalError as exc:
        log.warning("%s; reading %s a pattern at a time", exc, bucket)
        return None
    return bool(config.num_replicas == 1)
