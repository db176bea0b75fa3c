"""What a docker node knows about registries without asking dockerd: its pull policy, which
registry an image reference names, and the credentials a docker config.json holds for it."""

from __future__ import annotations

import base64
import binascii
import json
import os
from pathlib import Path
from typing import Literal, get_args

from shared.errors import ExecutionFailed, InvalidSpec

PullPolicy = Literal["always", "missing", "never"]
PULL_POLICIES: tuple[PullPolicy, ...] = get_args(PullPolicy)
DEFAULT_PULL_POLICY: PullPolicy = "missing"
# Seconds for one pull, layers included; Nomad's image_pull_timeout default.
DEFAULT_PULL_TIMEOUT = 300.0

DOCKER_HUB = "docker.io"
# The names config.json files (and `docker login`) use for Docker Hub.
_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io"}


def registry_of(image: str) -> str:
    """The registry host an image reference names, as docker reads it: the first path component
    when it looks like a host (has '.' or ':', or is localhost), else Docker Hub."""
    first, slash, _ = image.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return DOCKER_HUB if first in _HUB_ALIASES else first
    return DOCKER_HUB


def qualified(image: str) -> str:
    """The reference with its registry spelt out (`busybox` -> `docker.io/library/busybox`):
    dockerd stores it under the short name all the same, and the registry is then explicit."""
    first, slash, _ = image.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return image
    return f"{DOCKER_HUB}/{image}" if slash else f"{DOCKER_HUB}/library/{image}"


def docker_config_path() -> Path:
    """Where the docker CLI keeps its config.json: $DOCKER_CONFIG, else ~/.docker."""
    folder = os.environ.get("DOCKER_CONFIG") or str(Path.home() / ".docker")
    return Path(folder) / "config.json"


def _host_of(key: str) -> str:
    """A config.json `auths` key (`127.0.0.1:5000`, `https://index.docker.io/v1/`) as a host."""
    host = key.split("://", 1)[-1].split("/", 1)[0]
    return DOCKER_HUB if host in _HUB_ALIASES else host


class RegistryCredentials:
    """The `auths` of a docker config.json, read again at every pull (so rotated credentials
    apply without a restart; pulls are rare). Credential helpers (`credsStore`, `credHelpers`)
    are not consulted: a node's credentials go in `auths`, as `docker login` writes them
    when no helper is configured.

    `explicit` is a file the operator named (`--registry-auth`): it must exist and parse. The
    default is docker's own config.json, which may well be absent (no credentials then)."""

    def __init__(self, path: Path | None = None) -> None:
        self.explicit = path is not None
        self.path = path if path is not None else docker_config_path()

    def check(self) -> None:
        """Read the file once, to refuse a bad --registry-auth at start rather than at a pull."""
        for key, entry in self._auths(InvalidSpec).items():
            self._entry(entry, _host_of(key), InvalidSpec)

    def for_image(self, image: str) -> dict[str, str] | None:
        """The X-Registry-Auth content for the image's registry, or None without credentials.
        A file that cannot be read fails the pull, retryably: another node may be set up well."""
        registry = registry_of(image)
        for key, entry in self._auths(ExecutionFailed).items():
            if _host_of(key) == registry:
                return self._entry(entry, registry, ExecutionFailed)
        return None

    def describe(self, image: str) -> str:
        """Where credentials for the image's registry would come from, for error messages."""
        option = "" if self.explicit else "; give them with --registry-auth FILE"
        return f"no credentials for {registry_of(image)} in {self.path}{option}"

    def _auths(self, error: type[InvalidSpec] | type[ExecutionFailed]) -> dict[str, object]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            if self.explicit:
                raise self._error(error, "no such file") from None
            return {}
        except OSError as exc:
            raise self._error(error, exc.strerror or type(exc).__name__) from None
        try:
            config = json.loads(text)
        except ValueError as exc:
            raise self._error(error, f"not JSON ({exc})") from None
        auths = config.get("auths", {}) if isinstance(config, dict) else None
        if not isinstance(auths, dict) or not all(isinstance(v, dict) for v in auths.values()):
            raise self._error(error, 'expected {"auths": {"<registry>": {"auth": ...}}}')
        return auths

    def _entry(
        self, entry: object, registry: str, error: type[InvalidSpec] | type[ExecutionFailed]
    ) -> dict[str, str]:
        assert isinstance(entry, dict)  # checked by _auths
        if entry.get("identitytoken"):
            return {"identitytoken": str(entry["identitytoken"])}
        if entry.get("username") and entry.get("password"):
            return {"username": str(entry["username"]), "password": str(entry["password"])}
        try:
            user, sep, password = (
                base64.b64decode(str(entry.get("auth", ""))).decode().partition(":")
            )
        except (binascii.Error, UnicodeDecodeError):
            sep = ""
        if not sep:
            raise self._error(
                error, f'the entry for {registry} has no valid "auth" (base64 of user:password)'
            )
        return {"username": user, "password": password}

    def _error(
        self, error: type[InvalidSpec] | type[ExecutionFailed], why: str
    ) -> InvalidSpec | ExecutionFailed:
        message = f"registry credentials {self.path}: {why}"
        if error is InvalidSpec:
            return InvalidSpec(message)
        return ExecutionFailed(message, retryable=True)
