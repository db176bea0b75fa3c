"""IPFS inputs and the IPFS publisher against a real Helia node speaking Kubo's RPC API."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from compute.agent import ComputeAgent
from compute.fetch import fetch_ipfs
from shared import ipfs
from shared.errors import ExecutionFailed, Unavailable
from shared.ipfs import IPFSClient
from shared.natsserver import EmbeddedNats
from shared.spec.params import IPFSSource
from tests.e2e.helpers_data import cat_job, noop_job, source
from tests.integration.stack import stack


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_tree(root: Path) -> Path:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "a.txt").write_text("file a\n")
    (root / "sub" / "b.txt").write_text("file b\n")
    (root / "sub" / "deeper" / "c.bin").write_bytes(bytes(range(256)) * 1000)
    (root / "empty").mkdir()
    return root


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


async def test_add_and_get_a_folder_and_a_file(ipfs_api: str, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    async with IPFSClient(ipfs_api) as node:
        assert await node.version()
        folder_cid = await node.add(src)
        file_cid = await node.add(src / "a.txt")
        await node.get(folder_cid, tmp_path / "got")
        await node.get(file_cid, tmp_path / "one.txt")
        assert await node.is_dir(folder_cid) and not await node.is_dir(file_cid)
    assert tree(tmp_path / "got") == tree(src)
    assert (tmp_path / "got" / "empty").is_dir()
    assert (tmp_path / "one.txt").read_text() == "file a\n"


async def test_fetch_input_file_and_folder_cids(ipfs_env: str, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    async with IPFSClient() as node:  # SHOAL_IPFS_API from ipfs_env
        folder_cid, file_cid = await node.add(src), await node.add(src / "sub" / "b.txt")
    got = await fetch_ipfs(IPFSSource.model_validate({"CID": folder_cid}), tmp_path / "in" / "d")
    assert tree(got) == tree(src)
    got = await fetch_ipfs(IPFSSource.model_validate({"CID": file_cid}), tmp_path / "in" / "f")
    assert got.read_text() == "file b\n"


async def test_unknown_or_bad_cid_is_final(ipfs_env: str, tmp_path: Path) -> None:
    unknown = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"  # never added
    for cid in (unknown, "not-a-cid"):
        with pytest.raises(ExecutionFailed, match=f"ipfs .*{cid}") as err:
            await fetch_ipfs(IPFSSource.model_validate({"CID": cid}), tmp_path / "x")
        assert not err.value.retryable


async def test_unreachable_api_is_retryable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    api = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("SHOAL_IPFS_API", api)
    with pytest.raises(ExecutionFailed, match="cannot reach the IPFS API") as err:
        await fetch_ipfs(IPFSSource.model_validate({"CID": "bafyabc"}), tmp_path / "x")
    assert err.value.retryable
    async with IPFSClient(api) as node:
        with pytest.raises(Unavailable):
            await node.version()
    assert not await ipfs.probe(api)


async def test_agent_advertises_ipfs_only_with_a_node(
    nats_server: EmbeddedNats, ipfs_api: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SHOAL_IPFS_API", f"http://127.0.0.1:{closed_port()}")
    async with stack(nats_server.url, tmp_path / "without", agents=1) as s:
        info = s.agents["node-0"].info()
        assert "ipfs" not in info.publishers and "ipfs" not in info.sources
        assert {"s3", "urlDownload"} <= set(info.sources) and "s3" in info.publishers
    monkeypatch.setenv("SHOAL_IPFS_API", ipfs_api)
    async with stack(nats_server.url, tmp_path / "with", agents=1) as s:
        agent: ComputeAgent = s.agents["node-0"]
        assert "ipfs" in agent.info().publishers and "ipfs" in agent.info().sources


async def test_wasm_job_reads_an_ipfs_folder(
    nats_server: EmbeddedNats, ipfs_env: str, tmp_path: Path
) -> None:
    async with IPFSClient() as node:
        cid = await node.add(make_tree(tmp_path / "src"))
    spec = cat_job("/inputs/sub/b.txt", [source("ipfs", "/inputs", CID=cid)], name="ipfs-cat")
    async with stack(nats_server.url, tmp_path / "stack", agents=1) as s, await s.client() as c:
        job_id = await c.submit(spec)
        view = await c.wait(job_id, timeout=60)
        assert view.state == "Completed", view
        out = b"".join([x.data async for x in c.logs(job_id) if x.stream == "stdout"])
        assert out == b"file b\n"


async def test_ipfs_publisher_and_results(
    nats_server: EmbeddedNats, ipfs_env: str, tmp_path: Path
) -> None:
    async with stack(nats_server.url, tmp_path / "stack", agents=1) as s, await s.client() as c:
        job_id = await c.submit(noop_job("hello ipfs\n", {"Type": "ipfs"}))
        view = await c.wait(job_id, timeout=60)
        assert view.state == "Completed", view
        (execution,) = view.executions
        assert execution.result is not None and execution.result.publisher == "ipfs"
        cid = execution.result.location
        async with IPFSClient() as node:  # the CID is the archive itself, readable by anyone
            size = await node.cat(cid, tmp_path / "raw.tar.gz")
        assert size == execution.result.size > 0
        (folder,) = await c.results(job_id, tmp_path / "got")
        assert (folder / "stdout").read_text() == "hello ipfs\n"
        assert (folder / "exitCode").read_text() == "0\n"
