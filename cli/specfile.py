"""Reads a job spec from a file or stdin and gathers template variables from the flags."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from shared.spec import JobSpec, load_spec
from shared.template import variables_from


def read_spec_text(path: str) -> tuple[str, str]:
    """The text and a display name; `-` reads stdin."""
    if path == "-":
        return sys.stdin.read(), "<stdin>"
    return Path(path).read_text(encoding="utf-8"), path


def load_spec_file(
    path: str, pairs: Sequence[str] = (), env_regex: str | None = None
) -> tuple[JobSpec, dict[str, str]]:
    text, name = read_spec_text(path)
    variables = variables_from(pairs, env_regex=env_regex)
    return load_spec(text, variables, source=name), variables
