"""What CPython's small-object allocator holds in this process, for the soak's `--serve` child.

pymalloc carves objects of up to 512 bytes out of 1 MiB arenas and gives an arena back only
when every object in it is gone. After a burst, a few long-lived objects (the futures and timer
handles of forever-running loops, a node's latest heartbeat) left in each of the burst's arenas
keep them all: the objects' bytes are back where they started, the arenas are not. This reads
both, so a soak can tell that from a leak.
"""

from __future__ import annotations

import gc
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

_FIELDS = {
    "arenas": re.compile(rb"# arenas allocated current\s*=\s*([\d,]+)"),
    "allocated_bytes": re.compile(rb"# bytes in allocated blocks\s*=\s*([\d,]+)"),
    "free_pool_bytes": re.compile(rb"\d+ unused pools \* \d+ bytes\s*=\s*([\d,]+)"),
}


def pymalloc_stats() -> dict[str, int]:
    """Arenas held, bytes in live small objects, bytes in wholly free pools of held arenas,
    read from sys._debugmallocstats (which writes to the C stderr); {} without pymalloc."""
    gc.collect()
    with tempfile.TemporaryFile() as out:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(out.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read()
    found = {k: rx.search(text) for k, rx in _FIELDS.items()}
    return {k: int(m.group(1).replace(b",", b"")) for k, m in found.items() if m is not None}


def write_report(path: Path) -> None:
    """Append this process's pymalloc_stats() to `path`, one JSON line."""
    with path.open("a") as f:
        f.write(json.dumps(pymalloc_stats()) + "\n")


def read_reports(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
