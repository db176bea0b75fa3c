"""The one exception tree of Shoal; every third-party error is translated into it at the boundary.

ShoalError                      root; `.retryable` says whether trying again can help
├── InvalidSpec                 the user's input is wrong; carries every problem with its path
├── NotFound                    a job, execution or node that does not exist
├── Conflict                    a lost compare-and-swap or a state that forbids the request
├── Unavailable                 NATS (or another dependency) cannot be reached; retryable
│   └── NoResponders            a request no one subscribes to (a service not running)
└── ExecutionFailed             a task could not run or failed; `.retryable` set by the engine
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class ShoalError(Exception):
    """Root of every error Shoal raises on purpose."""

    retryable: bool = False
    code: str = "error"

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if retryable is not None:
            self.retryable = retryable

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the user's input, and where (`Tasks[0].Resources.Memory`)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class InvalidSpec(ShoalError):
    """The user's input (spec, template, flag or request) is not valid; lists every problem."""

    code = "invalid"

    def __init__(self, problems: list[Problem] | str, *, source: str = "") -> None:
        if isinstance(problems, str):
            problems = [Problem("", problems)]
        self.problems = problems
        self.source = source
        head = f"{source}: " if source else ""
        if len(problems) == 1:
            text = head + str(problems[0])
        else:
            lines = "\n".join(f"  - {p}" for p in problems)
            text = f"{head}{len(problems)} problems:\n{lines}"
        super().__init__(text)


class NotFound(ShoalError):
    """The named job, execution or node does not exist."""

    code = "not_found"


class Conflict(ShoalError):
    """A concurrent change won, or the object's state forbids the request."""

    code = "conflict"


class Unavailable(ShoalError):
    """A dependency (NATS, dockerd, an object store) cannot be reached right now."""

    code = "unavailable"
    retryable = True


class NoResponders(Unavailable):
    """The server answered a request itself: nothing subscribes to its subject."""


class ExecutionFailed(ShoalError):
    """A task could not be started or failed; `retryable` says if another attempt may succeed."""

    code = "execution_failed"


_BY_CODE: dict[str, type[ShoalError]] = {
    cls.code: cls
    for cls in (ShoalError, InvalidSpec, NotFound, Conflict, Unavailable, ExecutionFailed)
}


def error_from_code(code: str, message: str, problems: Sequence[Problem] = ()) -> ShoalError:
    """Rebuild an error sent over the wire as (code, message), and for InvalidSpec its
    `problems` where the sender listed them (else one problem per line of the message)."""
    cls = _BY_CODE.get(code, ShoalError)
    if cls is InvalidSpec and problems:
        return InvalidSpec(list(problems))
    if cls is InvalidSpec:
        return InvalidSpec(
            [
                Problem("", line.strip().removeprefix("- "))
                for line in message.splitlines()
                if line.strip()
            ]
            or message
        )
    return cls(message)
