"""The one place aiodocker's and aiohttp's errors become Shoal's, each saying whether trying
again (here or on another node) can help."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import aiohttp
from aiodocker.exceptions import DockerError

from shared.errors import ExecutionFailed, ShoalError, Unavailable

# Start failures that are the spec's fault (bad entrypoint, mount over a file...): no retry helps.
_USER_ERRORS = ("executable file not found", "no such file or directory", "not a directory")
# What a registry (through dockerd) says when a pull can never succeed: credentials missing or
# refused, no such tag or repository, a bad reference. Anything else (dial errors, DNS, TLS
# handshake timeouts, the registry's own 5xx, rate limits) may pass: a retry can help.
AUTH_REFUSALS = ("unauthorized", "authentication required", "no basic auth credentials", "denied")
_PULL_FINAL = (
    *AUTH_REFUSALS,
    "manifest unknown",
    "not found",
    "does not exist",
    "invalid reference",
)


def words(exc: BaseException) -> str:
    """What went wrong, never empty: some errors (a timeout, a bare assert) have no message."""
    return str(exc) or repr(exc)


@contextlib.contextmanager
def map_docker_errors(what: str, *, pull: bool = False) -> Iterator[None]:
    """aiodocker and aiohttp errors raised inside, as Shoal's; `pull` for an image pull, whose
    failures the registry words."""
    try:
        yield
    except DockerError as exc:
        raise (_pull_error if pull else _translate)(exc, what) from None
    except (aiohttp.ClientError, OSError) as exc:
        raise Unavailable(f"{what}: docker daemon unreachable: {words(exc)}") from None


def _translate(exc: DockerError, what: str) -> ShoalError:
    why = exc.message or repr(exc)
    message = f"{what}: {why}"
    if exc.status == 900:  # aiodocker's code for "cannot connect"
        return Unavailable(f"{what}: docker daemon unreachable: {why}")
    if exc.status in (400, 404):  # bad parameters, no such image: the same on every attempt
        return ExecutionFailed(message, retryable=False)
    if exc.status == 500 and any(hint in why.lower() for hint in _USER_ERRORS):
        return ExecutionFailed(message, retryable=False)
    return ExecutionFailed(message, retryable=True)  # 409 conflict, 5xx daemon trouble


def _pull_error(exc: DockerError, what: str) -> ShoalError:
    why = exc.message or repr(exc)
    if exc.status == 900:
        return Unavailable(f"{what}: docker daemon unreachable: {why}")
    # dockerd answers 404 for an unknown tag or repository, 500 for most else (its status
    # says little: a refused login is a 500 too), 0 for an error in the progress stream.
    final = exc.status in (400, 401, 403, 404) or any(h in why.lower() for h in _PULL_FINAL)
    return ExecutionFailed(f"{what} failed: {why}", retryable=not final)
