"""Tests for shared.constraints: operator spellings, shape checks and Kubernetes match semantics."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.constraints import (
    OPERATORS,
    Requirement,
    check_constraint,
    first_unmet,
    matches_all,
    normalize_operator,
)

# --- operator normaliser ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        ("=", "="),
        ("==", "="),
        (" == ", "="),
        ("!=", "!="),
        ("in", "in"),
        ("IN", "in"),
        ("In", "in"),
        (" in ", "in"),
        ("notin", "notin"),
        ("NotIn", "notin"),
        ("NOTIN", "notin"),
        ("exists", "exists"),
        ("Exists", "exists"),
        ("!", "!"),
        (" ! ", "!"),
        ("gt", "gt"),
        ("GT", "gt"),
        (">", "gt"),
        ("lt", "lt"),
        ("Lt", "lt"),
        ("<", "lt"),
        ("\tlt\n", "lt"),
    ],
)
def test_normalize_operator(spelling: str, canonical: str) -> None:
    assert normalize_operator(spelling) == canonical
    assert canonical in OPERATORS


@pytest.mark.parametrize("spelling", OPERATORS)
def test_canonical_operators_are_fixed_points(spelling: str) -> None:
    assert normalize_operator(spelling) == spelling


@pytest.mark.parametrize(
    "spelling",
    ["", " ", "~", "===", "=!", ">=", "<=", "not in", "not_in", "nin", "eq", "equals", "!!", "has"],
)
def test_normalize_operator_rejects(spelling: str) -> None:
    with pytest.raises(ValueError, match="is not a constraint operator") as info:
        normalize_operator(spelling)
    for op in ("=", "!=", "in", "notin", "exists", "!", "gt", "lt"):
        assert op in str(info.value)


def test_normalize_operator_rejects_non_string() -> None:
    with pytest.raises(ValueError, match="is not a constraint operator"):
        normalize_operator(None)  # type: ignore[arg-type]


# --- shape checks ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "op", "values"),
    [
        ("region", "=", ["eu"]),
        ("region", "==", ["eu"]),
        ("region", "=", ["eu", "us"]),  # acts as "in"
        ("region", "!=", ["eu"]),
        ("region", "!=", ["eu", "us"]),  # acts as "notin"
        ("region", "in", ["eu"]),
        ("region", "in", ["eu", "us", "ap"]),
        ("region", "notin", ["eu"]),
        ("region", "=", [""]),  # an empty label value is a value
        ("gpu", "exists", []),
        ("spot", "!", []),
        ("cores", "gt", ["4"]),
        ("cores", ">", ["4"]),
        ("cores", "lt", ["4.5"]),
        ("cores", "<", ["-3"]),
        ("cores", "gt", [" 10 "]),
        ("cores", "GT", ["0"]),
        ("a.b/c-d_e", "in", ("x",)),
    ],
)
def test_check_constraint_accepts(key: str, op: str, values: list[str]) -> None:
    check_constraint(key, op, values)


@pytest.mark.parametrize(
    ("key", "op", "values", "message"),
    [
        ("", "=", ["eu"], "key must not be empty"),
        ("  ", "exists", [], "key must not be empty"),
        ("region", "bogus", ["eu"], "is not a constraint operator"),
        ("region", "=", [], "needs at least one value"),
        ("region", "==", [], "needs at least one value"),
        ("region", "!=", [], "needs at least one value"),
        ("region", "in", [], "needs at least one value"),
        ("region", "notin", [], "needs at least one value"),
        ("region", "exists", ["eu"], "takes no values"),
        ("region", "!", ["eu"], "takes no values"),
        ("cores", "gt", [], "needs exactly one value"),
        ("cores", "lt", ["1", "2"], "needs exactly one value"),
        ("cores", "gt", ["four"], "needs a number"),
        ("cores", "lt", [""], "needs a number"),
        ("cores", "gt", ["1e3"], "needs a number"),
        ("cores", "gt", ["nan"], "needs a number"),
        ("cores", "lt", ["inf"], "needs a number"),
        ("region", "in", "eu", "list of strings"),  # a bare string is not a list of values
        ("cores", "gt", [4], "list of strings"),
    ],
)
def test_check_constraint_rejects(key: str, op: str, values: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_constraint(key, op, values)


def test_requirement_validates_and_normalises() -> None:
    req = Requirement("region", " IN ", ["eu", "us"])  # type: ignore[arg-type]
    assert req.operator == "in"
    assert req.values == ("eu", "us")
    assert Requirement("cores", ">", ("4",)).operator == "gt"
    assert Requirement("gpu", "exists").values == ()
    with pytest.raises(ValueError, match="needs at least one value"):
        Requirement("region", "in", ())
    with pytest.raises(ValueError, match="takes no values"):
        Requirement("gpu", "exists", ("yes",))
    with pytest.raises(ValueError, match="needs a number"):
        Requirement("cores", "gt", ("many",))


def test_requirement_is_frozen_and_hashable() -> None:
    req = Requirement("region", "==", ("eu",))
    assert req == Requirement("region", "=", ("eu",))
    assert len({req, Requirement("region", "=", ("eu",))}) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        req.key = "zone"  # type: ignore[misc]


# --- matching --------------------------------------------------------------------------------

NODE = {
    "region": "eu",
    "zone": "eu-1",
    "cores": "8",
    "ratio": "1.5",
    "gpu": "",
    "arch": "amd64",
    "Region": "US",
}


@pytest.mark.parametrize(
    ("key", "op", "values", "expected"),
    [
        # equality
        ("region", "=", ["eu"], True),
        ("region", "==", ["eu"], True),
        ("region", "=", ["us"], False),
        ("region", "=", ["EU"], False),  # values compare exactly
        ("region", "=", ["eu "], False),
        ("region", "=", ["us", "eu"], True),  # several values: "in"
        ("gpu", "=", [""], True),
        ("missing", "=", ["eu"], False),  # missing key never equals
        ("missing", "=", [""], False),
        # inequality: a missing key matches (Kubernetes semantics)
        ("region", "!=", ["us"], True),
        ("region", "!=", ["eu"], False),
        ("region", "!=", ["us", "eu"], False),  # several values: "notin"
        ("region", "!=", ["us", "ap"], True),
        ("missing", "!=", ["eu"], True),
        # in / notin
        ("region", "in", ["eu", "us"], True),
        ("region", "in", ["us", "ap"], False),
        ("missing", "in", ["eu"], False),
        ("region", "notin", ["us", "ap"], True),
        ("region", "notin", ["eu", "ap"], False),
        ("missing", "notin", ["eu"], True),
        # keys are case-sensitive
        ("Region", "=", ["US"], True),
        ("Region", "=", ["eu"], False),
        ("REGION", "exists", [], False),
        # exists / does not exist
        ("region", "exists", [], True),
        ("gpu", "exists", [], True),  # present with an empty value
        ("missing", "exists", [], False),
        ("missing", "!", [], True),
        ("region", "!", [], False),
        ("gpu", "!", [], False),
        # numeric comparisons
        ("cores", "gt", ["4"], True),
        ("cores", "gt", ["8"], False),  # strictly greater
        ("cores", "gt", ["16"], False),
        ("cores", "lt", ["16"], True),
        ("cores", "lt", ["8"], False),  # strictly less
        ("cores", "lt", ["4"], False),
        ("cores", ">", ["7.5"], True),
        ("cores", "<", ["8.5"], True),
        ("cores", "gt", ["-1"], True),
        ("ratio", "gt", ["1"], True),
        ("ratio", "lt", ["2"], True),
        ("cores", "gt", ["10"], False),  # numeric, not string, order ("8" > "10" as strings)
        ("cores", "lt", ["10"], True),
        # numeric comparisons never match a missing key or a non-numeric value
        ("missing", "gt", ["0"], False),
        ("missing", "lt", ["0"], False),
        ("arch", "gt", ["0"], False),
        ("arch", "lt", ["0"], False),
        ("zone", "gt", ["0"], False),
        ("gpu", "gt", ["-1"], False),  # empty label value is not a number
        ("gpu", "lt", ["1"], False),
    ],
)
def test_matches(key: str, op: str, values: list[str], expected: bool) -> None:
    req = Requirement(key, op, tuple(values))
    assert req.matches(NODE) is expected


@pytest.mark.parametrize(
    "labels",
    [{}, {"cores": "many"}, {"cores": "1e3"}, {"cores": "NaN"}, {"cores": "inf"}, {"cores": ""}],
)
@pytest.mark.parametrize("op", ["gt", "lt"])
def test_numeric_comparison_never_raises(labels: dict[str, str], op: str) -> None:
    assert Requirement("cores", op, ("1",)).matches(labels) is False


@pytest.mark.parametrize("op", OPERATORS)
def test_every_operator_on_empty_labels(op: str) -> None:
    values: tuple[str, ...] = () if op in ("exists", "!") else ("1",)
    expected = op in ("!=", "notin", "!")
    assert Requirement("k", op, values).matches({}) is expected


# --- describe --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "op", "values", "text"),
    [
        ("region", "in", ["eu", "us"], "region in (eu, us)"),
        ("region", "notin", ["eu"], "region notin (eu)"),
        ("region", "=", ["eu"], "region = eu"),
        ("region", "==", ["eu"], "region = eu"),
        ("region", "=", ["eu", "us"], "region in (eu, us)"),
        ("region", "!=", ["eu"], "region != eu"),
        ("region", "!=", ["eu", "us"], "region notin (eu, us)"),
        ("gpu", "=", [""], 'gpu = ""'),
        ("gpu", "exists", [], "gpu exists"),
        ("spot", "!", [], "!spot"),
        ("cores", "gt", ["4"], "cores > 4"),
        ("cores", "<", ["4"], "cores < 4"),
    ],
)
def test_describe(key: str, op: str, values: list[str], text: str) -> None:
    req = Requirement(key, op, tuple(values))
    assert req.describe() == text
    assert str(req) == text


# --- sets of requirements --------------------------------------------------------------------


def test_matches_all_and_first_unmet() -> None:
    reqs = [
        Requirement("region", "in", ("eu", "us")),
        Requirement("cores", "gt", ("4",)),
        Requirement("spot", "!"),
        Requirement("arch", "=", ("arm64",)),
    ]
    assert not matches_all(reqs, NODE)
    assert first_unmet(reqs, NODE) == reqs[3]
    assert matches_all(reqs[:3], NODE)
    assert first_unmet(reqs[:3], NODE) is None
    assert first_unmet(reqs, {}) == reqs[0]
    assert first_unmet(reqs, {"region": "eu"}) == reqs[1]
    # an iterator is consumed only once, lazily
    assert first_unmet(iter(reqs), NODE) == reqs[3]
    assert matches_all(iter(reqs[:3]), NODE)


def test_empty_requirements_match_every_node() -> None:
    assert matches_all([], {})
    assert matches_all([], NODE)
    assert first_unmet([], NODE) is None


# --- properties ------------------------------------------------------------------------------

_text = st.text(max_size=8)
_labels = st.dictionaries(st.sampled_from(["a", "b", "c"]), _text, max_size=3)


@given(_labels, st.sampled_from(["a", "b", "c"]), _text)
def test_not_equal_is_negation_of_equal(labels: dict[str, str], key: str, value: str) -> None:
    eq = Requirement(key, "=", (value,))
    ne = Requirement(key, "!=", (value,))
    assert ne.matches(labels) is not eq.matches(labels)


@given(_labels, st.sampled_from(["a", "b", "c"]), st.lists(_text, min_size=1, max_size=4))
def test_notin_is_negation_of_in(labels: dict[str, str], key: str, values: list[str]) -> None:
    assert Requirement(key, "notin", tuple(values)).matches(labels) is not Requirement(
        key, "in", tuple(values)
    ).matches(labels)
    # "=" and "!=" with several values behave exactly as "in" and "notin"
    assert Requirement(key, "=", tuple(values)).matches(labels) is Requirement(
        key, "in", tuple(values)
    ).matches(labels)
    assert Requirement(key, "!=", tuple(values)).matches(labels) is Requirement(
        key, "notin", tuple(values)
    ).matches(labels)


@given(_labels, st.sampled_from(["a", "b", "c"]))
def test_does_not_exist_is_negation_of_exists(labels: dict[str, str], key: str) -> None:
    assert Requirement(key, "!").matches(labels) is not Requirement(key, "exists").matches(labels)


@given(st.integers(-(10**20), 10**20), st.integers(-(10**20), 10**20))
def test_gt_lt_compare_integers_exactly(actual: int, bound: int) -> None:
    labels = {"n": str(actual)}
    assert Requirement("n", "gt", (str(bound),)).matches(labels) is (actual > bound)
    assert Requirement("n", "lt", (str(bound),)).matches(labels) is (actual < bound)


@given(_labels, st.sampled_from(["a", "b", "c"]), _text, st.sampled_from(["gt", "lt"]))
def test_gt_lt_never_raise(labels: dict[str, str], key: str, bound: str, op: str) -> None:
    try:
        req = Requirement(key, op, (bound,))
    except ValueError:
        return  # a non-numeric bound is refused at construction, never at match time
    assert isinstance(req.matches(labels), bool)
