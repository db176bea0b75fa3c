"""Samples a process with py-spy while a scenario runs, and names its hot spots by file:line."""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import subprocess
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.procs import BIN, REPO

PROJECT = ("shared/", "orchestrator/", "compute/")  # cli/ is only the entry point
WRAPPERS = ("shared/bus/", "shared/lifecycle.py")  # generic callbacks, not a component
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*):(?P<line>\d+)\)$")
_STRIP = (
    re.compile(r"^.*/site-packages/"),
    re.compile(r"^.*/lib/python3\.\d+/"),
)


def py_spy() -> str | None:
    beside = BIN / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def _short(path: str) -> str:
    root = f"{REPO}/"
    if path.startswith(root):
        return path[len(root) :]
    for pattern in _STRIP:
        shortened, n = pattern.subn("", path)
        if n:
            return shortened
    return path


def _frames(stack: str) -> list[tuple[str, str, int]]:
    """(function, short file, line) from the root down to the leaf."""
    out = []
    for part in stack.split(";"):
        m = _FRAME.match(part.strip())
        if m is None:
            continue
        out.append((m.group("func"), _short(m.group("file")), int(m.group("line"))))
    return out


def _is_project(file: str) -> bool:
    return file.startswith(PROJECT)


class Profiler:
    """`py-spy record --format raw` on a pid until stop(); SIGINT makes py-spy write its file."""

    def __init__(self, pid: int, out: Path, *, rate: int = 200) -> None:
        exe = py_spy()
        if exe is None:
            raise RuntimeError("py-spy is not installed (pip install py-spy)")
        out.parent.mkdir(parents=True, exist_ok=True)
        self.out = out
        self._log = out.with_suffix(".log").open("wb")
        self.proc = subprocess.Popen(
            [
                exe,
                "record",
                "--pid",
                str(pid),
                "--rate",
                str(rate),
                "--format",
                "raw",
                "--full-filenames",
                "-o",
                str(out),
            ],
            stdout=self._log,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
        )

    async def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            for _ in range(200):
                if self.proc.poll() is not None:
                    break
                await asyncio.sleep(0.05)
            else:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


# Samples that py-spy counts as active but that are the kernel's or the scheduler's: a socket
# write (a syscall, and on a busy machine the moment the writer is preempted for the reader)
# and the event loop's poll.
WAITING = ("_SelectorSocketTransport.write", "EpollSelector.select")


def hot_spots(raw: Path, top: int = 15) -> dict[str, Any]:
    """Views of a raw py-spy profile, as shares of the samples spent running Python.

    - `waiting_pct`: samples in a socket write or the loop's poll (left out of the rest);
    - `task`: which asyncio task the sample ran in, named by its first Shoal frame below the
      event loop that is not a generic wrapper (else its first frame: nats-py's reader, ...);
    - `call_site`: inclusive samples per Shoal file:line (each counted once per sample), i.e.
      the lines of our code responsible for the time, library calls included;
    - `project_line`: the deepest Shoal frame of each sample (self time, roughly);
    - `leaf`: where the samples literally were (any file).
    """
    if not raw.exists():
        return {"error": f"no profile written at {raw}"}
    leaf: Counter[str] = Counter()
    line: Counter[str] = Counter()
    site: Counter[str] = Counter()
    task: Counter[str] = Counter()
    total = waiting = 0
    for text in raw.read_text().splitlines():
        stack, _, count_text = text.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = _frames(stack)
        if not frames:
            continue
        total += count
        func, file, lineno = frames[-1]
        if func in WAITING:
            waiting += count
            continue
        leaf[f"{file}:{lineno} {func}"] += count
        ours = [f for f in frames if _is_project(f[1])]
        if ours:
            func, file, lineno = ours[-1]
            line[f"{file}:{lineno} {func}"] += count
        else:
            line["(no Shoal frame: nats-py, asyncio)"] += count
        for name in {f"{f[1]}:{f[2]} {f[0]}" for f in ours if not f[1].startswith(WRAPPERS)}:
            site[name] += count
        task[_task_of(frames)] += count
    busy = max(total - waiting, 1)

    def ranked(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"where": k, "samples": v, "pct": round(100 * v / busy, 1)}
            for k, v in counter.most_common(top)
        ]

    return {
        "samples": total,
        "waiting_pct": round(100 * waiting / max(total, 1), 1),
        "file": str(raw),
        "task": ranked(task),
        "call_site": ranked(site),
        "project_line": ranked(line),
        "leaf": ranked(leaf),
    }


def _task_of(frames: list[tuple[str, str, int]]) -> str:
    below = [i for i, f in enumerate(frames) if f[0] == "Handle._run"]
    if not below:
        func, file, _ = frames[-1]
        return f"event loop: {func} ({file})"
    inner = frames[below[-1] + 1 :]
    for func, file, _ in inner:
        if _is_project(file) and not file.startswith(WRAPPERS):
            return f"{func} ({file})"
    if inner:
        func, file, _ = inner[0]
        return f"{func} ({file})"
    return "event loop: callbacks"


def print_hot_spots(title: str, spots: dict[str, Any], views: Iterable[str] = ()) -> None:
    if "error" in spots:
        print(f"{title}: {spots['error']}")
        return
    print(
        f"\n{title}: {spots['samples']} samples ({spots['file']}), "
        f"{spots['waiting_pct']}% in socket writes or the loop's poll; shares of the rest:"
    )
    for view in views or ("task", "call_site", "project_line", "leaf"):
        print(f"  by {view.replace('_', ' ')}:")
        for row in spots[view][:10]:
            print(f"    {row['pct']:5.1f}%  {row['where']}")
