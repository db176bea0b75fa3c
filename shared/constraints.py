"""Label constraints on nodes, with Kubernetes label-selector semantics (as Bacalhau uses them)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

__all__ = [
    "OPERATORS",
    "Requirement",
    "check_constraint",
    "first_unmet",
    "matches_all",
    "normalize_operator",
]

#: The canonical operators, in the order error messages list them.
OPERATORS: tuple[str, ...] = ("=", "!=", "in", "notin", "exists", "!", "gt", "lt")

_ALIASES: dict[str, str] = {op: op for op in OPERATORS} | {"==": "=", ">": "gt", "<": "lt"}

_VALID_TEXT = "=, ==, !=, in, notin, exists, !, gt (>), lt (<)"

# Kubernetes compares gt/lt as integers; decimals are accepted too. No exponents, NaN or inf.
_NUMERIC_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")


def _numeric(text: str) -> Decimal | None:
    stripped = str(text).strip()
    return Decimal(stripped) if _NUMERIC_RE.fullmatch(stripped) else None


def normalize_operator(op: str) -> str:
    """The canonical spelling of `op` (one of `OPERATORS`); case and surrounding space ignored.

    `==` becomes `=`, `>` becomes `gt` and `<` becomes `lt`.
    """
    canonical = _ALIASES.get(op.strip().lower()) if isinstance(op, str) else None
    if canonical is None:
        raise ValueError(f'"{op}" is not a constraint operator (use one of {_VALID_TEXT})')
    return canonical


def check_constraint(key: str, operator: str, values: Sequence[str]) -> None:
    """Raise ValueError unless (key, operator, values) is a well-formed constraint.

    `=`, `!=`, `in` and `notin` need at least one value (`=`/`!=` with several act as
    `in`/`notin`); `exists` and `!` take none; `gt` and `lt` take exactly one number.
    """
    if not isinstance(key, str) or not key.strip():
        raise ValueError("constraint key must not be empty")
    op = normalize_operator(operator)
    if isinstance(values, str) or not all(isinstance(v, str) for v in values):
        raise ValueError(f"constraint values must be a list of strings, got {values!r}")
    count = len(values)
    if op in ("=", "!=", "in", "notin"):
        if count == 0:
            raise ValueError(f'operator "{op}" on "{key}" needs at least one value')
    elif op in ("exists", "!"):
        if count:
            raise ValueError(f'operator "{op}" on "{key}" takes no values, got {count}')
    else:
        if count != 1:
            raise ValueError(f'operator "{op}" on "{key}" needs exactly one value, got {count}')
        if _numeric(values[0]) is None:
            raise ValueError(f'operator "{op}" on "{key}" needs a number, got "{values[0]}"')


@dataclass(frozen=True, slots=True)
class Requirement:
    """One node-label constraint; validated and its operator normalised on construction.

    Label keys and values are compared exactly and case-sensitively. Following Kubernetes,
    `!=` and `notin` also match nodes that lack the key, while `=`, `in`, `gt` and `lt` never
    do; `gt`/`lt` compare numerically and do not match a non-numeric label value.
    """

    key: str
    operator: str
    values: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_constraint(self.key, self.operator, self.values)
        object.__setattr__(self, "operator", normalize_operator(self.operator))
        object.__setattr__(self, "values", tuple(self.values))

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether a node with these labels satisfies the requirement; never raises."""
        op = self.operator
        present = self.key in labels
        if op == "exists":
            return present
        if op == "!":
            return not present
        if op in ("=", "in"):
            return present and labels[self.key] in self.values
        if op in ("!=", "notin"):
            return not present or labels[self.key] not in self.values
        if not present:
            return False
        actual = _numeric(labels[self.key])
        wanted = _numeric(self.values[0])
        if actual is None or wanted is None:
            return False
        return actual > wanted if op == "gt" else actual < wanted

    def describe(self) -> str:
        """A short human form: `region in (eu, us)`, `gpu = true`, `cores > 4`, `!spot`."""
        shown = [v if v else '""' for v in self.values]
        op = self.operator
        if op == "exists":
            return f"{self.key} exists"
        if op == "!":
            return f"!{self.key}"
        if op in ("gt", "lt"):
            return f"{self.key} {'>' if op == 'gt' else '<'} {shown[0]}"
        if op in ("=", "!=") and len(shown) == 1:
            return f"{self.key} {op} {shown[0]}"
        word = "in" if op in ("=", "in") else "notin"
        return f"{self.key} {word} ({', '.join(shown)})"

    def __str__(self) -> str:
        return self.describe()


def matches_all(reqs: Iterable[Requirement], labels: Mapping[str, str]) -> bool:
    """Whether the labels satisfy every requirement (an empty set matches every node)."""
    return all(req.matches(labels) for req in reqs)


def first_unmet(reqs: Iterable[Requirement], labels: Mapping[str, str]) -> Requirement | None:
    """The first requirement the labels fail, to explain why a node does not fit; else None."""
    return next((req for req in reqs if not req.matches(labels)), None)
