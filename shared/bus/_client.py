"""nats-py's connection with a cheaper reading of message headers, the same headers out."""

from __future__ import annotations

from nats.aio.client import Client

_CRLF = b"\r\n"


class NatsClient(Client):
    """`nats.aio.client.Client`, reading a header block as nats-py 2.16 does.

    Every record a compare-and-swap wrote to a KV bucket is stored with its
    `Nats-Expected-Last-Subject-Sequence` header, so a restart that replays the jobs and
    their executions parses one header block per record. nats-py tests a name for whitespace
    one character at a time in a generator; `str.split()` makes the same test in C
    (both use Python's definition of whitespace).
    """

    @staticmethod
    def _parse_header_lines(raw: bytes) -> dict[str, str]:
        out: dict[str, str] = {}
        for line in raw.split(_CRLF):
            if not line:
                continue
            name, sep, value = line.partition(b":")
            if not sep:
                continue
            try:
                key = name.strip().decode("ascii")
            except UnicodeDecodeError:
                continue  # not a token: nats-py skips it too
            if key and key.split() != [key]:  # whitespace in it, wherever
                continue
            out[key] = value.strip().decode("utf-8", "replace")
        return out
