"""Connection options from a credentials file (`--creds`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from shared.errors import InvalidSpec


def creds_options(path: str) -> dict[str, Any]:
    """nats-py connect options from `--creds`: a NATS JWT .creds file, or Shoal's YAML
    (`user`, `password`, optional `tls_ca` relative to the file) from `shoal auth init`."""
    file = Path(path).expanduser()
    try:
        text = file.read_text()
    except OSError as exc:
        raise InvalidSpec(f"cannot read credentials file {path}: {exc.strerror or exc}") from exc
    if "-----BEGIN NATS USER JWT-----" in text:
        return {"user_credentials": str(file)}
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidSpec(f"credentials file {path} is not YAML: {exc}") from exc
    if not isinstance(data, dict) or not data.get("user") or "password" not in data:
        raise InvalidSpec(
            f"credentials file {path} needs `user:` and `password:` lines "
            "(as written by `shoal auth init`) or must be a NATS .creds file"
        )
    options: dict[str, Any] = {"user": str(data["user"]), "password": str(data["password"])}
    if data.get("tls_ca"):
        options["tls_ca"] = str(file.parent / str(data["tls_ca"]))
    return options
