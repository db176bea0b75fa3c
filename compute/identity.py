"""Who a node is: the labels it advertises about its machine (beneath the labels it is
configured with), and the X25519 key pair that secrets are sealed for."""

from __future__ import annotations

import base64
import os
import platform
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from shared import sealing
from shared.errors import ShoalError

NODE_KEY_FILE = "node-key"

# Python's names for machines, turned into the ones Docker and Bacalhau constraints use.
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def default_labels(name: str) -> dict[str, str]:
    """OS, architecture and name, under both the Shoal and the Bacalhau spellings of the keys."""
    os_type = platform.system().lower()
    arch = _ARCH.get(platform.machine().lower(), platform.machine().lower())
    return {
        "os_type": os_type,
        "os_arch": arch,
        "name": name,
        "Operating-System": os_type,
        "Architecture": arch,
    }


def node_labels(node_id: str, configured: dict[str, str]) -> dict[str, str]:
    """What the node advertises: the defaults, overridden by the configured labels."""
    return {**default_labels(node_id), **configured}


def node_key(state_dir: Path) -> X25519PrivateKey:
    """The node's private key, kept in `<state dir>/node-key` (base64, mode 0600); a new one
    is made there when there is none. The same across restarts, so an offer sealed just
    before a restart still opens after it."""
    path = state_dir / NODE_KEY_FILE
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        key = sealing.new_private_key()
        raw = key.private_bytes_raw()
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another agent on the same state dir made it meanwhile
            return node_key(state_dir)
        with os.fdopen(fd, "w") as f:
            f.write(base64.b64encode(raw).decode() + "\n")
        return key
    try:
        return sealing.private_key_from(base64.b64decode(text, validate=True))
    except ValueError:
        raise ShoalError(
            f"{path} does not hold a node key (32 bytes, base64): remove it to have a new one made"
        ) from None
