"""Job specs for the data-plane tests: cat.wasm over an input source, noop with a publisher."""

from __future__ import annotations

import base64
import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


@functools.cache
def cat_wasm_url() -> str:
    """examples/wasm/cat.wat compiled, as an inline data URL."""
    import wasmtime

    wasm = bytes(wasmtime.wat2wasm((REPO / "examples" / "wasm" / "cat.wat").read_text()))
    return "data:application/wasm;base64," + base64.b64encode(wasm).decode("ascii")


def cat_job(
    path: str,
    inputs: Sequence[Mapping[str, Any]],
    *,
    publisher: Mapping[str, Any] | None = None,
    name: str = "cat",
) -> dict[str, Any]:
    """A batch job printing the task file `path` (from one of `inputs`) with cat.wasm."""
    task: dict[str, Any] = {
        "Name": "main",
        "Engine": {
            "Type": "wasm",
            "Params": {"EntryModule": "/app/cat.wasm", "Parameters": [path]},
        },
        "InputSources": [
            {
                "Source": {"Type": "inline", "Params": {"URL": cat_wasm_url()}},
                "Target": "/app/cat.wasm",
            },
            *inputs,
        ],
        "Resources": {"Memory": "64Mb"},
        "Timeouts": {"ExecutionTimeout": 60},
    }
    if publisher is not None:
        task["Publisher"] = dict(publisher)
    return {"Name": name, "Type": "batch", "Count": 1, "Tasks": [task]}


def noop_job(stdout: str, publisher: Mapping[str, Any], *, name: str = "publish") -> dict[str, Any]:
    """A batch job whose noop task prints `stdout`, published by `publisher`."""
    task = {
        "Name": "main",
        "Engine": {"Type": "noop", "Params": {"Stdout": stdout}},
        "Publisher": dict(publisher),
    }
    return {"Name": name, "Type": "batch", "Count": 1, "Tasks": [task]}


def source(kind: str, target: str, **params: Any) -> dict[str, Any]:
    return {"Source": {"Type": kind, "Params": params}, "Target": target}
