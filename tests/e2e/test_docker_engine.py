"""The docker engine against the real dockerd: output, env, mounts, limits, network, cleanup."""

from __future__ import annotations

import asyncio
import ipaddress
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from compute.engines.base import Mount, RunRequest
from compute.engines.docker import DockerEngine, container_name
from shared.errors import ExecutionFailed
from shared.spec.params import DockerParams
from tests.conftest import eventually, require

pytestmark = pytest.mark.docker

IMAGE = "busybox:1.37.0"
SETUP = "run .ci/docker-setup.sh to start dockerd and build the local busybox image"


@pytest.fixture
async def engine() -> AsyncIterator[DockerEngine]:
    e = DockerEngine(node_id=f"test-{uuid.uuid4().hex[:8]}", pull_timeout=20)
    try:
        require(await e.probe(), f"needs a reachable docker daemon ({SETUP})")
        require(await e.has_image(IMAGE), f"needs the image {IMAGE} ({SETUP})")
        yield e
    finally:
        if e.node_id and await e.probe():
            await e.cleanup(set())
        await e.close()


def request(tmp_path: Path, *script: str, **kwargs: Any) -> RunRequest:
    """A run of `sh -c <script>` (or of explicit Params given as `params=`)."""
    params = kwargs.pop("params", None) or {
        "Image": IMAGE,
        "Entrypoint": ["/bin/sh", "-c"],
        "Parameters": list(script),
    }
    execution_id = kwargs.pop("execution_id", f"e-{uuid.uuid4()}")
    tmp_path.mkdir(parents=True, exist_ok=True)
    stdout, stderr = tmp_path / "stdout", tmp_path / "stderr"
    stdout.touch()
    stderr.touch()
    return RunRequest(
        execution_id=execution_id,
        job_id=kwargs.pop("job_id", "j-test"),
        params=DockerParams.model_validate(params),
        workdir=tmp_path,
        stdout_path=stdout,
        stderr_path=stderr,
        **kwargs,
    )


async def docker_cli(*args: str) -> str:
    """Run the docker CLI (to plant containers the engine did not make); its stdout."""
    proc = await asyncio.create_subprocess_exec(
        "docker", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await proc.communicate()
    assert proc.returncode == 0, f"docker {' '.join(args)}: {stderr.decode()}"
    return stdout.decode().strip()


def out(req: RunRequest) -> str:
    return req.stdout_path.read_text()


def err(req: RunRequest) -> str:
    return req.stderr_path.read_text()


async def test_stdout_and_stderr_are_kept_apart(engine: DockerEngine, tmp_path: Path) -> None:
    req = request(tmp_path, "echo out1; echo err1 >&2; echo out2; echo err2 >&2")
    started = time.monotonic()
    result = await engine.run(req)
    elapsed = time.monotonic() - started
    assert (result.exit_code, result.error) == (0, "")
    assert out(req) == "out1\nout2\n"
    assert err(req) == "err1\nerr2\n"
    print(f"hello-world container run took {elapsed:.2f}s")
    assert await engine.containers() == []  # removed at the end


async def test_large_output_arrives_whole(engine: DockerEngine, tmp_path: Path) -> None:
    req = request(tmp_path, "head -c 3000000 /dev/zero | tr '\\0' x; echo; echo done >&2")
    result = await engine.run(req)
    assert result.exit_code == 0
    assert len(out(req)) == 3_000_001
    assert err(req) == "done\n"


async def test_exit_code(engine: DockerEngine, tmp_path: Path) -> None:
    result = await engine.run(request(tmp_path, "exit 7"))
    assert result.exit_code == 7
    assert not result.timed_out and not result.oom


async def test_environment(
    engine: DockerEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOAL_TEST_SECRET", "s3cret")
    params = {
        "Image": IMAGE,
        "Entrypoint": ["/bin/sh", "-c"],
        "Parameters": ['echo "A=$A B=$B C=$C D=$D"'],
        "EnvironmentVariables": ["A=1", "B = two words"],
    }
    req = request(tmp_path, params=params, env={"C": "3", "D": "env:SHOAL_TEST_SECRET"})
    result = await engine.run(req)
    assert result.exit_code == 0, err(req)
    assert out(req) == "A=1 B=two words C=3 D=s3cret\n"


async def test_missing_agent_variable_fails(engine: DockerEngine, tmp_path: Path) -> None:
    req = request(tmp_path, "true", env={"D": "env:SHOAL_TEST_NOT_SET_ANYWHERE"})
    with pytest.raises(ExecutionFailed, match="SHOAL_TEST_NOT_SET_ANYWHERE"):
        await engine.run(req)


async def test_entrypoint_parameters_and_working_directory(
    engine: DockerEngine, tmp_path: Path
) -> None:
    req = request(
        tmp_path / "a", params={"Image": IMAGE, "Entrypoint": ["echo"], "Parameters": [5]}
    )
    assert (await engine.run(req)).exit_code == 0
    assert out(req) == "5\n"
    req = request(
        tmp_path / "b", params={"Image": IMAGE, "Parameters": ["pwd"], "WorkingDirectory": "/etc"}
    )
    assert (await engine.run(req)).exit_code == 0
    assert out(req) == "/etc\n"


async def test_read_only_input_mounts(engine: DockerEngine, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "in.txt").write_text("dir input\n")
    single = tmp_path / "single.txt"
    single.write_text("file input\n")
    req = request(
        tmp_path / "run",
        "cat /inputs/in.txt /one/single.txt; touch /inputs/new 2>/dev/null && echo WROTE; "
        "echo x >> /one/single.txt 2>/dev/null && echo WROTE; true",
        mounts=(Mount(data, "/inputs"), Mount(single, "one/single.txt")),
    )
    result = await engine.run(req)
    assert result.exit_code == 0, err(req)
    assert out(req) == "dir input\nfile input\n"
    assert sorted(p.name for p in data.iterdir()) == ["in.txt"]
    assert single.read_text() == "file input\n"


async def test_writable_result_mount(engine: DockerEngine, tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    req = request(
        tmp_path / "run",
        "echo 15 > /outputs/result.txt",
        mounts=(Mount(outputs, "/outputs", read_only=False),),
    )
    assert (await engine.run(req)).exit_code == 0, err(req)
    assert (outputs / "result.txt").read_text() == "15\n"


async def test_memory_limit_ooms(engine: DockerEngine, tmp_path: Path) -> None:
    # The shell itself holds the 100 MB it reads, so the kernel must kill it under 16 MiB.
    req = request(
        tmp_path,
        "x=$(head -c 100000000 /dev/zero | tr '\\0' x); echo survived ${#x}",
        memory_bytes=16 * 1024 * 1024,
    )
    result = await engine.run(req)
    assert result.oom, result
    assert result.exit_code == 137
    assert result.error == f"out of memory (limit {16 * 1024 * 1024} bytes)"
    assert "survived" not in out(req)


async def test_cpu_and_memory_limits_are_applied(engine: DockerEngine, tmp_path: Path) -> None:
    req = request(
        tmp_path,
        "cat /sys/fs/cgroup/memory.max 2>/dev/null || "
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes",
        memory_bytes=64 * 1024 * 1024,
        cpu_millis=500,
    )
    result = await engine.run(req)
    assert result.exit_code == 0, err(req)
    assert out(req).strip() == str(64 * 1024 * 1024)


async def test_timeout_kills(engine: DockerEngine, tmp_path: Path) -> None:
    req = request(tmp_path, "echo started; sleep 30", timeout=1.0)
    started = time.monotonic()
    result = await engine.run(req)
    assert time.monotonic() - started < 15
    assert result.timed_out
    assert result.exit_code == -1
    assert result.error == "execution timed out after 1s"
    assert out(req) == "started\n"
    assert await engine.containers() == []


async def test_cancellation_removes_the_container(engine: DockerEngine, tmp_path: Path) -> None:
    req = request(tmp_path, "echo started; sleep 30", job_id="j-cancel")
    task = asyncio.create_task(engine.run(req))
    await eventually(lambda: out(req) == "started\n", what="the task to start", timeout=30)
    [found] = await engine.containers()
    assert found["name"] == container_name(req.execution_id)
    # The daemon's container list catches up with the start a moment later.

    async def running() -> bool:
        return [c["state"] for c in await engine.containers()] == ["running"]

    await eventually(running, what="the container to be listed as running")
    assert found["labels"] == {
        "shoal.job": "j-cancel",
        "shoal.execution": req.execution_id,
        "shoal.node": engine.node_id,
    }
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await engine.containers() == []


async def test_network_none_has_only_loopback(engine: DockerEngine, tmp_path: Path) -> None:
    req = request(tmp_path, "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '")
    assert (await engine.run(req)).exit_code == 0, err(req)
    assert out(req).split() == ["lo"]


async def test_network_bridge_has_an_interface(engine: DockerEngine, tmp_path: Path) -> None:
    req = request(tmp_path, "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '", network="Full")
    assert (await engine.run(req)).exit_code == 0, err(req)
    assert sorted(out(req).split()) == ["eth0", "lo"]


async def test_cleanup_removes_stray_containers(engine: DockerEngine, tmp_path: Path) -> None:
    require(shutil.which("docker") is not None, "needs the docker CLI to plant stray containers")
    for execution in ("e-stray", "e-keep"):
        labels = [f"shoal.node={engine.node_id}", f"shoal.execution={execution}"]
        await docker_cli("create", "--label", labels[0], "--label", labels[1], IMAGE, "sleep", "9")
    assert len(await engine.containers()) == 2
    assert await engine.cleanup({"e-keep"}) == 1
    [left] = await engine.containers()
    assert left["labels"]["shoal.execution"] == "e-keep"


async def test_bad_entrypoint_is_not_retryable(engine: DockerEngine, tmp_path: Path) -> None:
    req = request(tmp_path, params={"Image": IMAGE, "Entrypoint": ["/no/such/binary"]})
    with pytest.raises(ExecutionFailed, match="no such file") as caught:
        await engine.run(req)
    assert not caught.value.retryable
    assert await engine.containers() == []


async def test_unreachable_daemon_is_not_advertised(tmp_path: Path) -> None:
    e = DockerEngine(url=f"unix://{tmp_path}/no-such.sock")
    try:
        assert not await e.probe()
    finally:
        await e.close()


# ---- network HTTP: only the listed domains, through the engine's proxy -------------------------


@pytest.fixture
async def web_server() -> AsyncIterator[int]:
    """A tiny HTTP server on the host's loopback; answers every GET with its path."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        path = head.split(b" ")[1]
        body = b"hello from " + path + b"\n"
        writer.write(
            b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
        )
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def http_engine(engine: DockerEngine) -> AsyncIterator[DockerEngine]:
    pinned = {"allowed.test": "127.0.0.1", "api.allowed.test": "127.0.0.1"}
    e = DockerEngine(node_id=engine.node_id, proxy_resolve=pinned, pull_timeout=20)
    try:
        yield e
    finally:
        await e.close()


async def test_http_network_allows_only_listed_domains(
    http_engine: DockerEngine, tmp_path: Path, web_server: int
) -> None:
    port = web_server
    script = (
        f"wget -q -O - http://allowed.test:{port}/a || echo FAIL-a; "
        f"wget -q -O - http://api.allowed.test:{port}/b || echo FAIL-b; "
        f"wget -q -O - http://blocked.test:{port}/c || echo DENIED-c; "
        f"wget -q -O - http://allowed.test.evil:{port}/d || echo DENIED-d; "
        # A CONNECT tunnel (what HTTPS clients use), spoken by hand through nc.
        "proxy=${http_proxy#http://}; "
        f'printf "CONNECT allowed.test:{port} HTTP/1.1\\r\\n\\r\\n'
        'GET /tunnel HTTP/1.0\\r\\n\\r\\n" '
        "| nc ${proxy%:*} ${proxy#*:} | tail -n 1; "
        f'printf "CONNECT blocked.test:{port} HTTP/1.1\\r\\n\\r\\n" '
        "| nc ${proxy%:*} ${proxy#*:} | head -n 1"
    )
    req = request(tmp_path, script, network="HTTP", domains=("allowed.test",))
    result = await http_engine.run(req)
    assert result.exit_code == 0, err(req)
    lines = out(req).splitlines()
    assert lines[:4] == ["hello from /a", "hello from /b", "DENIED-c", "DENIED-d"], out(req)
    assert lines[4] == "hello from /tunnel", out(req)
    assert lines[5].startswith("HTTP/1.1 403"), out(req)
    assert "403" in err(req)


async def test_http_network_has_no_direct_route_out(
    http_engine: DockerEngine, tmp_path: Path
) -> None:
    """A server on the default bridge answers a Full-network task but not an HTTP one."""
    require(shutil.which("docker") is not None, "needs the docker CLI to start a peer server")
    peer = await docker_cli("run", "-d", "--rm", IMAGE, "httpd", "-f", "-p", "8080", "-h", "/etc")
    try:
        address = await docker_cli("inspect", "-f", "{{.NetworkSettings.IPAddress}}", peer)
        fetch = (
            f"for i in 1 2 3 4 5; do wget -q -O - http://{address}:8080/passwd && exit 0; "
            "sleep 1; done; exit 1"
        )
        req = request(tmp_path / "full", fetch, network="Full")
        assert (await http_engine.run(req)).exit_code == 0, err(req)
        assert "root:" in out(req)
        # No proxy: straight to the peer, which the internal network must not route to. (The
        # trailing `exit` keeps sh from exec'ing `timeout`, whose wget would then be PID 1,
        # immune to the SIGTERM that `timeout` sends.)
        direct = f"unset http_proxy; timeout 5 wget -q -O - http://{address}:8080/passwd; exit $?"
        req = request(tmp_path / "http", direct, network="HTTP", domains=("allowed.test",))
        assert (await http_engine.run(req)).exit_code != 0
        assert "root:" not in out(req)
    finally:
        await docker_cli("rm", "-f", peer)


async def bridge_gateway() -> str:
    """This host's address on docker's default bridge. Docker leaves `Gateway` out of the
    bridge's IPAM config on some daemons (Debian's 20.10 among them); it is then the first
    address of the subnet, which the daemon gives its bridge."""
    config = await docker_cli(
        "network",
        "inspect",
        "bridge",
        "-f",
        "{{range .IPAM.Config}}{{.Gateway}}|{{.Subnet}};{{end}}",
    )
    for entry in config.split(";"):
        gateway, _, subnet = entry.strip().partition("|")
        if gateway and ":" not in gateway:
            return gateway
        if subnet and ":" not in subnet:
            return str(next(ipaddress.ip_network(subnet).hosts()))
    raise AssertionError(f"docker's default bridge has no IPv4 address: {config!r}")


async def test_http_network_cannot_reach_this_hosts_own_services(
    http_engine: DockerEngine, tmp_path: Path
) -> None:
    """A service on 0.0.0.0 here answers a Full-network task through its gateway, but not an
    HTTP one: the HTTP network's gateway is this host too, and only the run's proxy is open."""
    require(shutil.which("docker") is not None, "needs the docker CLI to find the gateways")

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"host-secret\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "0.0.0.0", 0)
    port = int(server.sockets[0].getsockname()[1])
    try:
        gateway = await bridge_gateway()
        req = request(tmp_path / "full", f"nc -w 3 {gateway} {port}", network="Full")
        assert (await http_engine.run(req)).exit_code == 0, err(req)
        assert "host-secret" in out(req), "control: the host service must answer a Full task"

        script = (
            'echo "proxy=$http_proxy"; hostport=${http_proxy#http://}; '
            f"timeout 5 nc -w 3 ${{hostport%:*}} {port}; echo rc=$?"
        )
        req = request(tmp_path / "http", script, network="HTTP", domains=("allowed.test",))
        assert (await http_engine.run(req)).exit_code == 0, err(req)
        assert "host-secret" not in out(req), out(req)
        assert "rc=0" not in out(req), out(req)
    finally:
        server.close()
        await server.wait_closed()
    # The run's hole in the fence closed with it; the fence itself stays for the next run.
    proxy_port = out(req).split("proxy=", 1)[1].split()[0].rsplit(":", 1)[1]
    rules = await _iptables_input()
    assert f"--dport {proxy_port} " not in rules + " ", rules
    assert "-j DROP" in rules, rules


async def _iptables_input() -> str:
    proc = await asyncio.create_subprocess_exec(
        "iptables", "-w", "-S", "INPUT", stdout=asyncio.subprocess.PIPE
    )
    stdout, _ = await proc.communicate()
    return stdout.decode()
