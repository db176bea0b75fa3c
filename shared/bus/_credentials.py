"""Connection options from a credentials file (`--creds`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from shared.errors import InvalidSpec

# `_INBOX.<token>`: the identity's private inbox prefix; replies come to `<prefix>.<nuid>`.
_INBOX_PREFIX = re.compile(r"^[A-Za-z0-9_$-]+(\.[A-Za-z0-9_$-]+)*$")


def _shoal_creds(path: str) -> tuple[Path, dict[str, Any] | None]:
    """The file, and its YAML mapping (None for a NATS JWT .creds file)."""
    file = Path(path).expanduser()
    try:
        text = file.read_text()
    except OSError as exc:
        raise InvalidSpec(f"cannot read credentials file {path}: {exc.strerror or exc}") from exc
    if "-----BEGIN NATS USER JWT-----" in text:
        return file, None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidSpec(f"credentials file {path} is not YAML: {exc}") from exc
    if not isinstance(data, dict) or not data.get("user") or "password" not in data:
        raise InvalidSpec(
            f"credentials file {path} needs `user:` and `password:` lines "
            "(as written by `shoal auth init`) or must be a NATS .creds file"
        )
    return file, data


def creds_options(path: str) -> dict[str, Any]:
    """nats-py connect options from `--creds`: a NATS JWT .creds file, or Shoal's YAML
    (`user`, `password`, optional `inbox_prefix` and `tls_ca` relative to the file) from
    `shoal auth init`.

    `inbox_prefix` (`_INBOX.<identity>`) makes every reply inbox, KV watch and ordered
    consumer of the connection `_INBOX.<identity>.<nuid>`: the server lets each identity
    subscribe only under its own prefix, so no identity reads replies meant for another."""
    file, data = _shoal_creds(path)
    if data is None:
        return {"user_credentials": str(file)}
    options: dict[str, Any] = {"user": str(data["user"]), "password": str(data["password"])}
    prefix = data.get("inbox_prefix")
    if prefix:
        if not isinstance(prefix, str) or not _INBOX_PREFIX.match(prefix):
            raise InvalidSpec(
                f"credentials file {path}: inbox_prefix {prefix!r} must be subject tokens "
                "without wildcards, like _INBOX.alice"
            )
        options["inbox_prefix"] = prefix
    if data.get("tls_ca"):
        options["tls_ca"] = str(file.parent / str(data["tls_ca"]))
    return options


def creds_namespace(path: str) -> str | None:
    """The `namespace:` of a user's Shoal creds file (its first namespace), if it has one."""
    _, data = _shoal_creds(path)
    if data is None or not data.get("namespace"):
        return None
    return str(data["namespace"])
