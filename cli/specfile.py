"""Reads a job spec from a file or stdin and gathers template variables from the flags."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from shared.errors import InvalidSpec
from shared.spec import JobSpec, load_spec
from shared.template import variables_from


def read_spec_text(path: str) -> tuple[bytes, str]:
    """The raw bytes and a display name; `-` reads stdin. The loader decodes (and says
    clearly when the file is not UTF-8)."""
    if path == "-":
        return sys.stdin.buffer.read(), "<stdin>"
    try:
        return Path(path).read_bytes(), path
    except FileNotFoundError:
        raise InvalidSpec(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InvalidSpec(f"{path}: is a directory, not a spec file") from None
    except PermissionError:
        raise InvalidSpec(f"{path}: permission denied") from None


def load_spec_file(
    path: str, pairs: Sequence[str] = (), env_regex: str | None = None
) -> tuple[JobSpec, dict[str, str]]:
    text, name = read_spec_text(path)
    variables = variables_from(pairs, env_regex=env_regex)
    return load_spec(text, variables, source=name), variables
