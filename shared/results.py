"""The result archive format shared by publishers and `shoal job get`: one tar.gz per execution.

Layout inside: `stdout`, `stderr`, `exitCode`, and one folder per ResultPaths name.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from shared.errors import InvalidSpec

ARCHIVE = "results.tar.gz"


def pack(workdir: Path, names: list[str], exit_code: int | None) -> Path:
    """Write `workdir/results.tar.gz` from the task's output files and result folders."""
    (workdir / "exitCode").write_text("" if exit_code is None else f"{exit_code}\n")
    archive = workdir / ARCHIVE
    with tarfile.open(archive, "w:gz") as tar:
        for name in ("stdout", "stderr", "exitCode"):
            (workdir / name).touch()  # a task that printed nothing still has (empty) output
            tar.add(workdir / name, arcname=name)
        for name in names:
            folder = workdir / "outputs" / name
            if folder.exists():
                tar.add(folder, arcname=name)
    return archive


def unpack(archive: Path, dest: Path) -> list[Path]:
    """Extract safely (no absolute paths, no `..`, no links out); returns the top entries."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(dest, filter="data")
            return sorted({dest / m.name.split("/")[0] for m in tar.getmembers()})
    except (tarfile.TarError, OSError) as exc:
        raise InvalidSpec(f"result archive {archive.name} is damaged: {exc}") from None
