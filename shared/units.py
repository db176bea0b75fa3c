"""Parsing and formatting of CPU, sizes, GPU counts and durations as users write them."""

from __future__ import annotations

import math
import re
from fractions import Fraction

__all__ = [
    "format_cpu",
    "format_size",
    "parse_cpu",
    "parse_duration",
    "parse_gpu",
    "parse_size",
]

# A non-negative decimal number without exponent: "1", "1.5", "1.", ".5".
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"

_CPU_RE = re.compile(rf"({_NUMBER})\s*(m?)")
_SIZE_RE = re.compile(rf"({_NUMBER})\s*([a-z]*)")
_GPU_RE = re.compile(r"\d+")
_DURATION_PART = rf"\s*({_NUMBER})\s*(ns|us|\u00b5s|\u03bcs|ms|s|m|h)"
_DURATION_RE = re.compile(rf"(?:{_DURATION_PART})+\s*")
_DURATION_PART_RE = re.compile(_DURATION_PART)

_CPU_HINT = "use e.g. 250m, 0.5 or 2"
_SIZE_HINT = "use e.g. 512Mi, 1Gb, 100mb or plain bytes"
_DURATION_HINT = "use e.g. 600, 90s, 5m, 1h30m or 250ms"

# go-humanize ParseBytes semantics (what Bacalhau uses): decimal "k/kb/Kb/KB" = 1000,
# binary "ki/kib/KiB" = 1024, case-insensitive.
_SIZE_UNITS: dict[str, int] = {"": 1, "b": 1}
for _i, _p in enumerate("kmgtpe", start=1):
    _SIZE_UNITS[_p] = _SIZE_UNITS[_p + "b"] = 1000**_i
    _SIZE_UNITS[_p + "i"] = _SIZE_UNITS[_p + "ib"] = 1024**_i

_DURATION_UNITS: dict[str, Fraction] = {
    "ns": Fraction(1, 10**9),
    "us": Fraction(1, 10**6),
    "\u00b5s": Fraction(1, 10**6),  # micro sign
    "\u03bcs": Fraction(1, 10**6),  # greek small mu
    "ms": Fraction(1, 1000),
    "s": Fraction(1),
    "m": Fraction(60),
    "h": Fraction(3600),
}

_SIZE_NAMES = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def _quote(value: object) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def _number(value: int | float, what: str, hint: str) -> Fraction:
    """An int or finite float as an exact Fraction (a float via its repr, so 0.1 is 1/10)."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not {what} ({hint})")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not {what} ({hint})")
        number = Fraction(repr(value))
    else:
        number = Fraction(value)
    if number < 0:
        raise ValueError(f"{value!r} is not {what}: must not be negative")
    return number


def _split_sign(text: str) -> tuple[bool, str]:
    """Strip surrounding space and one leading sign; say whether it was a minus."""
    text = text.strip()
    if text[:1] in ("+", "-"):
        return text[0] == "-", text[1:].lstrip()
    return False, text


def parse_cpu(value: str | int | float) -> int:
    """CPU as millicores: `250m` → 250, `0.25` → 250, `"1"` → 1000, `2` → 2000.

    Any positive fraction of a millicore rounds up (`0.0001` → 1), so a request is never zero by
    accident. Only a lowercase `m` suffix is accepted: in Kubernetes quantities `M` means mega.
    """
    what = "a CPU amount"
    if isinstance(value, str):
        negative, text = _split_sign(value)
        match = _CPU_RE.fullmatch(text)
        if match is None:
            raise ValueError(f"{_quote(value)} is not {what} ({_CPU_HINT})")
        number = Fraction(match.group(1))
        if negative and number:
            raise ValueError(f"{_quote(value)} is not {what}: must not be negative")
        millis = number if match.group(2) else number * 1000
    elif isinstance(value, int | float):
        millis = _number(value, what, _CPU_HINT) * 1000
    else:
        raise ValueError(f"{value!r} is not {what} ({_CPU_HINT})")
    return math.ceil(millis)


def parse_size(value: str | int | float) -> int:
    """Bytes from a size such as `512Mi`, `1.5Gi`, `26GB`, `100mb`, `1 GB` or plain bytes.

    Units follow go-humanize (as Bacalhau does), case-insensitively: `k`/`kb` = 1000,
    `ki`/`kib` = 1024, and so on through `e`/`eb`/`ei`/`eib`. Fractional bytes round up.
    """
    what = "a size"
    if isinstance(value, str):
        negative, text = _split_sign(value.lower())
        match = _SIZE_RE.fullmatch(text)
        if match is None or match.group(2) not in _SIZE_UNITS:
            raise ValueError(f"{_quote(value)} is not {what} ({_SIZE_HINT})")
        number = Fraction(match.group(1))
        if negative and number:
            raise ValueError(f"{_quote(value)} is not {what}: must not be negative")
        size = number * _SIZE_UNITS[match.group(2)]
    elif isinstance(value, int | float):
        size = _number(value, what, _SIZE_HINT)
    else:
        raise ValueError(f"{value!r} is not {what} ({_SIZE_HINT})")
    return math.ceil(size)


def parse_gpu(value: str | int) -> int:
    """A GPU count: a non-negative whole number (`"8"` → 8, `0` → 0)."""
    hint = "use a whole number such as 0, 1 or 8"
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"{value} is not a GPU count: must not be negative")
        return value
    if isinstance(value, str):
        text = value.strip()
        if _GPU_RE.fullmatch(text):
            return int(text)
        if text.startswith("-") and _GPU_RE.fullmatch(text[1:].lstrip()):
            raise ValueError(f"{_quote(value)} is not a GPU count: must not be negative")
    raise ValueError(f"{_quote(value)} is not a GPU count ({hint})")


def parse_duration(value: str | int | float) -> float:
    """Seconds from a number of seconds (`600`, `"600"`) or a Go duration (`1h30m`, `250ms`).

    Units are `ns`, `us` (`µs`), `ms`, `s`, `m` and `h`, case-insensitive, and may be combined.
    """
    what = "a duration"
    if isinstance(value, str):
        negative, text = _split_sign(value.lower())
        if re.fullmatch(_NUMBER, text):
            seconds = Fraction(text)
        elif _DURATION_RE.fullmatch(text):
            seconds = sum(
                (
                    Fraction(m.group(1)) * _DURATION_UNITS[m.group(2)]
                    for m in _DURATION_PART_RE.finditer(text)
                ),
                Fraction(0),
            )
        else:
            raise ValueError(f"{_quote(value)} is not {what} ({_DURATION_HINT})")
        if negative and seconds:
            raise ValueError(f"{_quote(value)} is not {what}: must not be negative")
    elif type(value) is float and math.isfinite(value) and value >= 0:
        # Already seconds (every canonical spec has these): the exact detour through a
        # Fraction gives back the same float, at a tenth of a spec parse's cost.
        return abs(value)  # and -0.0 becomes 0.0, as through the Fraction
    elif isinstance(value, int | float):
        seconds = _number(value, what, _DURATION_HINT)
    else:
        raise ValueError(f"{value!r} is not {what} ({_DURATION_HINT})")
    return float(seconds)


def format_size(n: int) -> str:
    """Bytes in binary units with one decimal: `512 B`, `1.0 KiB`, `1.5 GiB`."""
    sign = "-" if n < 0 else ""
    size = abs(n)
    if size < 1024:
        return f"{sign}{size} B"
    index = 1
    while index < len(_SIZE_NAMES) - 1 and size >= 1024 ** (index + 1):
        index += 1
    text = f"{size / 1024**index:.1f}"
    if text == "1024.0" and index < len(_SIZE_NAMES) - 1:  # 1 MiB minus a byte is "1.0 MiB"
        index += 1
        text = f"{size / 1024**index:.1f}"
    return f"{sign}{text} {_SIZE_NAMES[index]}"


def format_cpu(millis: int) -> str:
    """Millicores the Kubernetes way: whole cores as `2`, anything else as `250m` or `1500m`."""
    if millis % 1000 == 0:
        return str(millis // 1000)
    return f"{millis}m"
