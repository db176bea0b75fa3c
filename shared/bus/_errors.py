"""nats-py's exceptions, translated into Shoal's at the boundary."""

from __future__ import annotations

from typing import Literal

import nats.errors
import nats.js.errors as jserrors

from shared.errors import Conflict, NoResponders, NotFound, ShoalError, Unavailable


class map_nats_errors:  # lower case: read as a function, `with map_nats_errors(...)`
    """Translate nats-py errors into ShoalError, saying what we were doing.

    A class, not a @contextmanager: it wraps every publish, and a generator-based context
    manager costs several times more per use."""

    __slots__ = ("what",)

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> Literal[False]:
        if exc is None or isinstance(exc, ShoalError) or not isinstance(exc, Exception):
            return False
        translated = _translate(self.what, exc)
        if translated is None:
            return False  # not nats-py's: on as it is
        raise translated from exc


def _translate(what: str, exc: Exception) -> ShoalError | None:
    if isinstance(exc, jserrors.KeyWrongLastSequenceError):
        return Conflict(f"{what}: changed concurrently ({exc.description})")
    if isinstance(exc, (jserrors.KeyNotFoundError, jserrors.NotFoundError)):
        return NotFound(f"{what}: not found")
    if isinstance(exc, jserrors.BadRequestError):
        if exc.err_code in (10071, 10164):  # wrong last sequence / key exists
            return Conflict(f"{what}: changed concurrently ({exc.description})")
        return ShoalError(f"{what}: NATS refused the request ({exc.description})")
    if isinstance(exc, nats.errors.NoRespondersError):
        return NoResponders(f"{what}: nobody is listening (is the service running?)")
    if isinstance(exc, (TimeoutError, nats.errors.TimeoutError, jserrors.ServiceUnavailableError)):
        return Unavailable(f"{what}: timed out waiting for NATS")
    if isinstance(exc, (nats.errors.ConnectionClosedError, nats.errors.NoServersError, OSError)):
        return Unavailable(f"{what}: NATS is unreachable ({exc})")
    if isinstance(exc, nats.errors.Error):
        return ShoalError(f"{what}: {exc}")
    return None


class _Refused(Exception):
    """Connecting cannot succeed by retrying: credentials or certificate refused."""
