"""Error replies on the wire: an `invalid` one carries its problems with their paths
(`Details`) beside the text older clients read (`Message`, `Problems`)."""

from __future__ import annotations

import msgspec
import pytest

from shared import wire
from shared.client import _error
from shared.errors import Conflict, InvalidSpec, NotFound, Problem, error_from_code

MEMORY = 'Tasks[0].Resources.Memory: "1Zb" is not a size'
INVALID = wire.ApiError(
    code="invalid",
    message=f"2 problems:\n  - Count: must be at least 1\n  - {MEMORY}",
    problems=["Count: must be at least 1", MEMORY],
    details=[
        wire.ApiProblem(path="Count", message="must be at least 1"),
        wire.ApiProblem(path="Tasks[0].Resources.Memory", message='"1Zb" is not a size'),
        wire.ApiProblem(message="the request as a whole"),
    ],
)


class OldApiError(msgspec.Struct, rename="pascal"):
    """ApiError as clients before `Details` decode it."""

    code: str
    message: str
    problems: list[str] = []


def test_details_go_on_the_wire_beside_the_text() -> None:
    sent = msgspec.json.decode(wire.encode(INVALID))
    assert sent["Details"] == [
        {"Path": "Count", "Message": "must be at least 1"},
        {"Path": "Tasks[0].Resources.Memory", "Message": '"1Zb" is not a size'},
        {"Message": "the request as a whole"},
    ]
    assert sent["Problems"] == ["Count: must be at least 1", MEMORY]
    old = msgspec.json.decode(wire.encode(INVALID), type=OldApiError)
    assert old.message == INVALID.message and old.problems == INVALID.problems
    assert "Details" not in msgspec.json.decode(wire.encode(wire.ApiError(code="x", message="y")))


def test_the_client_raises_the_problems_with_their_paths() -> None:
    raised = _error(INVALID)
    assert isinstance(raised, InvalidSpec)
    assert raised.problems == [
        Problem("Count", "must be at least 1"),
        Problem("Tasks[0].Resources.Memory", '"1Zb" is not a size'),
        Problem("", "the request as a whole"),
    ]
    assert str(raised).startswith("3 problems:\n  - Count: must be at least 1\n")


def test_an_orchestrator_before_details_still_gives_every_problem() -> None:
    raised = _error(wire.ApiError(code="invalid", message="...", problems=[MEMORY]))
    assert isinstance(raised, InvalidSpec) and raised.problems == [Problem("", MEMORY)]
    raised = _error(wire.ApiError(code="invalid", message=MEMORY))
    assert isinstance(raised, InvalidSpec) and str(raised) == MEMORY


@pytest.mark.parametrize(
    ("code", "kind"), [("not_found", NotFound), ("conflict", Conflict), ("what", Exception)]
)
def test_other_errors_keep_their_kind_and_message(code: str, kind: type[Exception]) -> None:
    raised = _error(wire.ApiError(code=code, message="no such job"), "node-1: ")
    assert isinstance(raised, kind) and str(raised) == "node-1: no such job"


def test_error_from_code_takes_the_problems_given() -> None:
    problems = [Problem("Count", "must be at least 1")]
    raised = error_from_code("invalid", "ignored", problems)
    assert isinstance(raised, InvalidSpec) and raised.problems == problems
    assert isinstance(error_from_code("conflict", "taken", problems), Conflict)
