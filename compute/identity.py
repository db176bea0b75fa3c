"""The labels a node advertises about its machine, beneath the labels it is configured with."""

from __future__ import annotations

import platform

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
