"""Tests for shared.units: every accepted unit form, every rejection, and round-trip properties."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.units import (
    format_cpu,
    format_size,
    parse_cpu,
    parse_duration,
    parse_gpu,
    parse_size,
)

KI, MI, GI, TI, PI, EI = (1024**i for i in range(1, 7))


# --- CPU -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "millis"),
    [
        ("250m", 250),
        ("0.25", 250),
        (0.25, 250),
        ("1", 1000),
        (2, 2000),
        ("6000m", 6000),
        ("0.001", 1),
        ("32", 32000),
        ("0", 0),
        (0, 0),
        ("0m", 0),
        ("1.5", 1500),
        (".5", 500),
        ("1.", 1000),
        (" 2 ", 2000),
        ("500 m", 500),
        ("+1", 1000),
        ("-0", 0),
        (0.1, 100),
        (0.3, 300),
        ("0.0001", 1),  # any positive fraction of a millicore rounds up
        ("0.5m", 1),
        (1e-9, 1),
        ("1000000", 1_000_000_000),
    ],
)
def test_parse_cpu(value: str | int | float, millis: int) -> None:
    assert parse_cpu(value) == millis


@pytest.mark.parametrize(
    "value",
    [
        "",
        " ",
        "abc",
        "1x",
        "250M",  # Kubernetes "M" is mega, not milli: refuse rather than guess
        "1k",
        "m",
        "1e3",
        "nan",
        "inf",
        "1..5",
        "1 2",
        "--1",
        True,
        False,
        None,
        [1],
        float("nan"),
        float("inf"),
        float("-inf"),
    ],
)
def test_parse_cpu_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="is not a CPU amount"):
        parse_cpu(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["-1", "-250m", -1, -0.5, " - 1"])
def test_parse_cpu_rejects_negative(value: str | int | float) -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        parse_cpu(value)


@pytest.mark.parametrize(
    ("millis", "text"),
    [(0, "0"), (250, "250m"), (1000, "1"), (2000, "2"), (1500, "1500m"), (1, "1m")],
)
def test_format_cpu(millis: int, text: str) -> None:
    assert format_cpu(millis) == text
    assert parse_cpu(text) == millis


@given(st.integers(min_value=0, max_value=10**12))
def test_cpu_format_round_trips(millis: int) -> None:
    assert parse_cpu(format_cpu(millis)) == millis


@given(st.integers(min_value=0, max_value=10**9))
def test_cpu_millis_suffix_is_identity(millis: int) -> None:
    assert parse_cpu(f"{millis}m") == millis
    assert parse_cpu(millis) == millis * 1000


# --- sizes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (0, 0),
        ("0", 0),
        (1024, 1024),
        ("1024", 1024),
        ("  7 ", 7),
        ("1b", 1),
        ("1B", 1),
        # decimal units, go-humanize style (what Bacalhau uses): any case, with or without "b"
        ("1k", 1000),
        ("1kb", 1000),
        ("1KB", 1000),
        ("1Kb", 1000),
        ("36mb", 36 * 10**6),
        ("100mb", 100 * 10**6),
        ("1M", 10**6),
        ("640G", 640 * 10**9),
        ("26GB", 26 * 10**9),
        ("1gb", 10**9),
        ("1Gb", 10**9),
        ("2t", 2 * 10**12),
        ("2TB", 2 * 10**12),
        ("1p", 10**15),
        ("1PB", 10**15),
        ("1e", 10**18),
        ("1EB", 10**18),
        # binary units
        ("1ki", KI),
        ("1KiB", KI),
        ("512Mi", 512 * MI),
        ("512MiB", 512 * MI),
        ("512mib", 512 * MI),
        ("4Gi", 4 * GI),
        ("4GiB", 4 * GI),
        ("1Ti", TI),
        ("1TIB", TI),
        ("1Pi", PI),
        ("1Ei", EI),
        # decimals and spacing
        ("1.5Gi", 3 * GI // 2),
        ("1.5GB", 15 * 10**8),
        (".5Ki", 512),
        ("1 GB", 10**9),
        ("1   Gi", GI),
        (" 2 mb ", 2 * 10**6),
        ("0.5", 1),  # fractional bytes round up
        ("1.0001k", 1001),
        ("+1k", 1000),
        ("-0", 0),
        (1.5e9, 1_500_000_000),
        (2.0, 2),
    ],
)
def test_parse_size(value: str | int | float, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize(
    "value",
    [
        "",
        " ",
        "abc",
        "1Zb",
        "1zib",
        "Gi",
        "1 G B",
        "1gibb",
        "1e9",
        "1,000",
        "0x10",
        "1.2.3Gi",
        "nan",
        "inf",
        "--5",
        True,
        False,
        None,
        b"1Gi",
        float("nan"),
        float("inf"),
    ],
)
def test_parse_size_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="is not a size"):
        parse_size(value)  # type: ignore[arg-type]


def test_parse_size_message_shows_examples() -> None:
    with pytest.raises(ValueError) as info:
        parse_size("1Zb")
    assert str(info.value) == '"1Zb" is not a size (use e.g. 512Mi, 1Gb, 100mb or plain bytes)'


@pytest.mark.parametrize("value", ["-1", "-1Gi", " -5 mb", -1, -0.5])
def test_parse_size_rejects_negative(value: str | int | float) -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        parse_size(value)


@given(st.integers(min_value=0, max_value=2**80))
def test_size_of_plain_integer_is_itself(n: int) -> None:
    assert parse_size(str(n)) == n
    assert parse_size(n) == n
    assert parse_size(f"{n}b") == n
    assert parse_size(f"{n} B") == n


@given(
    st.integers(min_value=0, max_value=10**6),
    st.sampled_from(["k", "m", "g", "t", "p", "e"]),
    st.booleans(),
    st.booleans(),
    st.booleans(),
)
def test_size_units_any_case(
    n: int, prefix: str, binary: bool, suffix_b: bool, upper: bool
) -> None:
    unit = prefix + ("i" if binary else "") + ("b" if suffix_b else "")
    if upper:
        unit = unit.upper()
    power = "kmgtpe".index(prefix) + 1
    expected = n * (1024 if binary else 1000) ** power
    assert parse_size(f"{n}{unit}") == expected
    assert parse_size(f"{n} {unit}") == expected


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1, "1 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (MI, "1.0 MiB"),
        (MI - 1, "1.0 MiB"),  # never "1024.0 KiB"
        (512 * MI, "512.0 MiB"),
        (GI, "1.0 GiB"),
        (3 * GI // 2, "1.5 GiB"),
        (TI, "1.0 TiB"),
        (PI, "1.0 PiB"),
        (EI, "1.0 EiB"),
        (2048 * EI, "2048.0 EiB"),
        (-GI, "-1.0 GiB"),
    ],
)
def test_format_size(n: int, text: str) -> None:
    assert format_size(n) == text


@given(st.integers(min_value=0, max_value=2**70))
def test_format_size_is_parseable_and_close(n: int) -> None:
    text = format_size(n)
    number, unit = text.split(" ")
    assert float(number) < 1024 or unit == "EiB"
    back = parse_size(text)
    assert math.isclose(back, n, rel_tol=0.05, abs_tol=1)


# --- GPUs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "count"),
    [("8", 8), ("0", 0), (0, 0), (1, 1), (" 2 ", 2), ("16", 16), ("007", 7)],
)
def test_parse_gpu(value: str | int, count: int) -> None:
    assert parse_gpu(value) == count


@pytest.mark.parametrize(
    "value", ["", " ", "abc", "1.5", "1.0", "2x", "+1", "1e1", True, False, None, 1.0, 1.5]
)
def test_parse_gpu_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="is not a GPU count"):
        parse_gpu(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["-1", " - 2", -1])
def test_parse_gpu_rejects_negative(value: str | int) -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        parse_gpu(value)


@given(st.integers(min_value=0, max_value=10**6))
def test_gpu_round_trips(n: int) -> None:
    assert parse_gpu(str(n)) == n
    assert parse_gpu(n) == n


# --- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (600, 600.0),
        ("600", 600.0),
        (0, 0.0),
        ("0", 0.0),
        ("0s", 0.0),
        ("-0s", 0.0),
        (1.5, 1.5),
        ("1.5", 1.5),
        ("10s", 10.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("1h30m15s", 5415.0),
        ("1h 30m", 5400.0),
        ("250ms", 0.25),
        ("1.5h", 5400.0),
        (".5m", 30.0),
        ("2m3.5s", 123.5),
        ("1500us", 0.0015),
        ("1500\u00b5s", 0.0015),  # micro sign
        ("1500\u03bcs", 0.0015),  # greek small mu
        ("1000000ns", 0.001),
        ("10S", 10.0),
        ("1H30M", 5400.0),
        (" 90s ", 90.0),
        ("+5s", 5.0),
        ("1m1m", 120.0),  # Go adds repeated units too
    ],
)
def test_parse_duration(value: str | int | float, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value",
    [
        "",
        " ",
        "abc",
        "5d",
        "s",
        "1h30",
        "h1",
        "5 minutes",
        "1e3s",
        "nan",
        "inf",
        "--5s",
        True,
        None,
        float("nan"),
        float("inf"),
    ],
)
def test_parse_duration_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [-1, -0.5, "-1", "-5s", "-1h30m", " - 10ms"])
def test_parse_duration_rejects_negative(value: str | int | float) -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        parse_duration(value)


@given(
    st.integers(min_value=0, max_value=1000),
    st.integers(min_value=0, max_value=59),
    st.integers(min_value=0, max_value=59),
)
def test_duration_components_add_up(h: int, m: int, s: int) -> None:
    assert parse_duration(f"{h}h{m}m{s}s") == h * 3600 + m * 60 + s
    assert parse_duration(str(h * 3600 + m * 60 + s)) == h * 3600 + m * 60 + s


@given(st.floats(min_value=0, allow_nan=False, allow_infinity=False))
def test_a_float_of_seconds_is_itself(value: float) -> None:
    """The fast path for floats agrees with the exact one through a Fraction."""
    assert parse_duration(value) == float(Fraction(repr(value)))
    assert str(parse_duration(-0.0)) == "0.0"
