"""nats-py's exceptions, translated into Shoal's at the boundary."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import nats.errors
import nats.js.errors as jserrors

from shared.errors import Conflict, NotFound, ShoalError, Unavailable


@contextlib.contextmanager
def map_nats_errors(what: str) -> Iterator[None]:
    """Translate nats-py errors into ShoalError, saying what we were doing."""
    try:
        yield
    except ShoalError:
        raise
    except jserrors.KeyWrongLastSequenceError as exc:
        raise Conflict(f"{what}: changed concurrently ({exc.description})") from exc
    except (jserrors.KeyNotFoundError, jserrors.NotFoundError) as exc:
        raise NotFound(f"{what}: not found") from exc
    except jserrors.BadRequestError as exc:
        if exc.err_code in (10071, 10164):  # wrong last sequence / key exists
            raise Conflict(f"{what}: changed concurrently ({exc.description})") from exc
        raise ShoalError(f"{what}: NATS refused the request ({exc.description})") from exc
    except nats.errors.NoRespondersError as exc:
        raise Unavailable(f"{what}: nobody is listening (is the service running?)") from exc
    except (TimeoutError, nats.errors.TimeoutError, jserrors.ServiceUnavailableError) as exc:
        raise Unavailable(f"{what}: timed out waiting for NATS") from exc
    except (nats.errors.ConnectionClosedError, nats.errors.NoServersError, OSError) as exc:
        raise Unavailable(f"{what}: NATS is unreachable ({exc})") from exc
    except nats.errors.Error as exc:
        raise ShoalError(f"{what}: {exc}") from exc


def _reraise_cancel(exc: BaseException) -> None:
    """nats-py turns a cancellation into ConnectionClosedError once the connection is closed;
    swallowing it would keep a cancelled loop alive forever."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from exc


class _Refused(Exception):
    """Connecting cannot succeed by retrying: credentials or certificate refused."""
