"""A docker node's local decisions, without a daemon: whether a bid needs the image here (pull
policy), which registry credentials a pull sends, and the words a probe that fails logs."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import pytest

from compute.bidding import image_refusal
from compute.engine_setup import ALL_ENGINES, make_engines, usable_engines
from compute.engines.base import Engine, RunRequest, RunResult
from compute.engines.docker import DockerEngine
from compute.engines.docker_registry import RegistryCredentials, qualified, registry_of
from shared.errors import ExecutionFailed, InvalidSpec
from shared.spec import load_spec

SPEC = load_spec(
    json.dumps(
        {
            "Name": "pull-policy",
            "Type": "batch",
            "Tasks": [
                {
                    "Name": "main",
                    "Engine": {"Type": "docker", "Params": {"Image": "registry.test/app:1"}},
                }
            ],
        }
    )
)


class ImagelessEngine(Engine):
    """Runs images, and has none."""

    name = "docker"
    runs_images = True

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def probe(self) -> bool:
        return True

    async def run(self, request: RunRequest) -> RunResult:
        raise AssertionError("not run in these tests")

    async def has_image(self, image: str) -> bool:
        self.asked.append(image)
        return False


# ---- bids ------------------------------------------------------------------------------------


async def test_a_pulling_node_bids_without_asking_for_the_image() -> None:
    engine = ImagelessEngine()
    assert await image_refusal(SPEC, engine, pulls=True) is None
    assert engine.asked == []  # no daemon round trip in the bid


async def test_a_node_that_never_pulls_declines_an_image_it_lacks() -> None:
    engine = ImagelessEngine()
    assert await image_refusal(SPEC, engine, pulls=False) == (
        "image registry.test/app:1 is not on this node, and this node does not pull images "
        "(--image-pull never)"
    )
    assert engine.asked == ["registry.test/app:1"]


# ---- image references ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "registry", "full"),
    [
        ("busybox", "docker.io", "docker.io/library/busybox"),
        ("busybox:1.37.0", "docker.io", "docker.io/library/busybox:1.37.0"),
        (
            "bacalhauproject/stress-ng:1.0.0",
            "docker.io",
            "docker.io/bacalhauproject/stress-ng:1.0.0",
        ),
        ("docker.io/library/busybox", "docker.io", "docker.io/library/busybox"),
        ("index.docker.io/x/y", "docker.io", "index.docker.io/x/y"),
        ("ghcr.io/bacalhau-project/x:latest", "ghcr.io", "ghcr.io/bacalhau-project/x:latest"),
        ("127.0.0.1:5000/shoal/test:t", "127.0.0.1:5000", "127.0.0.1:5000/shoal/test:t"),
        ("localhost/app", "localhost", "localhost/app"),
        ("app@sha256:" + "0" * 64, "docker.io", "docker.io/library/app@sha256:" + "0" * 64),
    ],
)
def test_the_registry_an_image_names(image: str, registry: str, full: str) -> None:
    assert registry_of(image) == registry
    assert qualified(image) == full


# ---- credentials -----------------------------------------------------------------------------


def config(tmp_path: Path, auths: object) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"auths": auths, "credsStore": "desktop"}))
    return path


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_credentials_as_docker_login_writes_them(tmp_path: Path) -> None:
    path = config(
        tmp_path,
        {
            "127.0.0.1:5000": {"auth": b64("alice:pa:ss")},  # a password may hold ':'
            "https://index.docker.io/v1/": {"auth": b64("bob:hub")},
            "https://ghcr.io": {"username": "carol", "password": "gh"},
            "quay.io": {"auth": "", "identitytoken": "tok"},
        },
    )
    creds = RegistryCredentials(path)
    creds.check()
    assert creds.for_image("127.0.0.1:5000/a/b:1") == {"username": "alice", "password": "pa:ss"}
    assert creds.for_image("busybox") == {"username": "bob", "password": "hub"}
    assert creds.for_image("docker.io/x/y") == {"username": "bob", "password": "hub"}
    assert creds.for_image("ghcr.io/x/y") == {"username": "carol", "password": "gh"}
    assert creds.for_image("quay.io/x/y") == {"identitytoken": "tok"}
    assert creds.for_image("127.0.0.1:5001/a/b") is None


def test_credentials_are_read_at_every_pull(tmp_path: Path) -> None:
    creds = RegistryCredentials(config(tmp_path, {}))
    assert creds.for_image("reg.test/a") is None
    config(tmp_path, {"reg.test": {"auth": b64("new:token")}})  # rotated, no restart
    assert creds.for_image("reg.test/a") == {"username": "new", "password": "token"}


def test_docker_own_config_is_the_default_and_may_be_absent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    creds = RegistryCredentials()
    assert creds.path == tmp_path / "config.json"
    assert creds.for_image("reg.test/a") is None
    assert creds.describe("reg.test/a") == (
        f"no credentials for reg.test in {tmp_path / 'config.json'}; "
        "give them with --registry-auth FILE"
    )
    config(tmp_path, {"reg.test": {"auth": b64("u:p")}})
    assert creds.for_image("reg.test/a") == {"username": "u", "password": "p"}


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (None, "no such file"),
        ("{nope", "not JSON"),
        ('{"auths": []}', 'expected {"auths"'),
        (
            '{"auths": {"reg.test": {"auth": "bm9jb2xvbg=="}}}',
            'the entry for reg.test has no valid "auth"',
        ),
        ('{"auths": {"reg.test": {"auth": "%%%"}}}', 'the entry for reg.test has no valid "auth"'),
    ],
)
def test_a_bad_credentials_file_is_refused_at_start_and_fails_pulls(
    tmp_path: Path, text: str | None, why: str
) -> None:
    path = tmp_path / "auth.json"
    if text is not None:
        path.write_text(text)
    creds = RegistryCredentials(path)
    with pytest.raises(InvalidSpec, match=f"registry credentials {path}: ") as refused:
        creds.check()
    assert why in str(refused.value)
    with pytest.raises(ExecutionFailed) as failed:
        creds.for_image("reg.test/app")
    assert why in failed.value.message
    assert failed.value.retryable  # the node's set-up, not the task's: another node may do
    assert "bm9jb2xvbg" not in failed.value.message  # no secret in the words


# ---- probes: why docker is not advertised, in words ------------------------------------------


def no_docker_anywhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """This host as one without docker: no DOCKER_HOST, no context, no socket where aiodocker
    looks for one."""
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.docker/config.json naming a context
    monkeypatch.setattr("aiodocker.docker._sock_search_paths", [tmp_path / "docker.sock"])


async def test_no_docker_on_the_host_is_logged_in_words(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    no_docker_anywhere(monkeypatch, tmp_path)
    caplog.set_level(logging.INFO)
    candidates = make_engines(ALL_ENGINES, "node-a")
    engines = await usable_engines(candidates, ALL_ENGINES, "node-a", keep=set())
    assert sorted(engines) == ["noop", "wasm"]
    said = [r.getMessage() for r in caplog.records if "docker" in r.getMessage()]
    assert said[0] == (
        "docker engine not usable here: no docker daemon found: DOCKER_HOST is not set, no "
        "docker context names one, and there is no docker socket (/var/run/docker.sock)"
    ), said
    assert "node-a: engine docker is not usable here; not advertising it" in said


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"DOCKER_CONTEXT": "no-such-context"}, "no docker daemon found: "),
        ({"DOCKER_HOST": "unix:///nonexistent/docker.sock"}, "docker daemon unreachable: "),
        ({"DOCKER_HOST": "nonsense"}, "no docker daemon found: "),
    ],
)
async def test_a_broken_docker_setting_is_not_advertised_and_says_why(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    env: dict[str, str],
    words: str,
) -> None:
    no_docker_anywhere(monkeypatch, tmp_path)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    engine = DockerEngine("node-a")
    assert not await engine.probe()
    [said] = [r.getMessage() for r in caplog.records if "docker engine" in r.getMessage()]
    assert words in said, said
    assert not said.rstrip().endswith(":") and len(said.split(words, 1)[1].strip()) > 3, said
