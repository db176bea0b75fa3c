"""A real image registry on loopback for the pull tests: Debian's `docker-registry` (the CNCF
distribution registry), started per test on a free port, with optional htpasswd auth."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import eventually, require, terminate

INSTALL = "run .ci/docker-setup.sh (it installs Debian's docker-registry and apache2-utils)"


@dataclass(frozen=True, slots=True)
class Registry:
    address: str  # 127.0.0.1:PORT, what an image reference starts with
    log: Path

    def image(self, repo_tag: str) -> str:
        return f"{self.address}/{repo_tag}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run(*args: str, stdin: bytes | None = None, check: bool = True) -> str:
    """A command's stdout; with `check`, fails the test on a non-zero exit."""
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else None,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate(stdin)
    assert not check or proc.returncode == 0, f"{' '.join(args)}: {err.decode()}"
    return out.decode().strip()


async def _answers(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


@contextlib.asynccontextmanager
async def registry(tmp: Path, *, users: dict[str, str] | None = None) -> AsyncIterator[Registry]:
    """`docker-registry serve` on 127.0.0.1 (plain HTTP: dockerd allows it for loopback
    registries), storing in `tmp`; with `users`, only they may push or pull (htpasswd)."""
    binary = shutil.which("docker-registry")
    require(binary is not None, f"needs Debian's docker-registry package ({INSTALL})")
    assert binary is not None
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    auth = ""
    if users:
        require(shutil.which("htpasswd") is not None, f"needs htpasswd ({INSTALL})")
        lines = [await run("htpasswd", "-Bbn", user, pw) for user, pw in users.items()]
        (tmp / "htpasswd").write_text("\n".join(lines) + "\n")
        auth = f"auth:\n  htpasswd:\n    realm: shoal-test\n    path: {tmp / 'htpasswd'}\n"
    config = tmp / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: info\n"
        f"storage:\n  filesystem:\n    rootdirectory: {tmp / 'storage'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  secret: shoal-test\n{auth}"
    )
    log = tmp / "registry.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            binary, "serve", str(config), stdout=out, stderr=out
        )
    try:
        await eventually(lambda: _answers(port), timeout=30, what="the registry to listen")
        yield Registry(f"127.0.0.1:{port}", log)
    finally:
        await terminate(proc, grace=10)


async def push(image: str, *, source: str = "busybox:latest", config: Path | None = None) -> None:
    """Put `source` into the registry as `image`, and leave no local tag `image` behind."""
    cli = ["docker", *(["--config", str(config)] if config else [])]
    await run("docker", "tag", source, image)
    try:
        await run(*cli, "push", image)
    finally:
        await untag(image)


async def untag(*images: str) -> None:
    for image in images:
        await run("docker", "rmi", image, check=False)


async def login(config: Path, address: str, user: str, password: str) -> Path:
    """`docker login` into a config dir of the test's own (never the machine's): its
    config.json, with the `auths` entry docker writes."""
    await run(
        "docker",
        "--config",
        str(config),
        "login",
        "-u",
        user,
        "--password-stdin",
        address,
        stdin=password.encode(),
    )
    return config / "config.json"
