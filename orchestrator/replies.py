"""The API's error answers: a ShoalError as the `ApiReply` every verb's caller reads."""

from __future__ import annotations

from shared import wire
from shared.errors import InvalidSpec, ShoalError


def error_reply(exc: ShoalError) -> wire.ApiReply:
    """The error answer for `exc`; an InvalidSpec's problems both as text and with their paths."""
    if isinstance(exc, InvalidSpec):
        error = wire.ApiError(
            code=exc.code,
            message=str(exc),
            problems=[str(p) for p in exc.problems],
            details=[wire.ApiProblem(path=p.path, message=p.message) for p in exc.problems],
        )
    else:
        error = wire.ApiError(code=exc.code, message=str(exc))
    return wire.ApiReply(ok=False, error=error)
