"""Docker jobs end to end: the project's fixtures (and the same checks on the reference corpus,
where SHOAL_COMPAT_CORPUS names it) through orchestrator, agent, dockerd, logs and results."""

from __future__ import annotations

from pathlib import Path

import pytest

from compute.inputs import AllowedPath
from shared.natsserver import EmbeddedNats
from shared.spec import load_spec
from tests.corpus import corpus_text, fixture_text
from tests.e2e.docker_stack import IMAGE, docker_stack

pytestmark = pytest.mark.docker

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def spec_text(origin: str, name: str) -> str:
    """A fixture of the repository, or a file of the reference corpus (skips without it)."""
    return fixture_text(name) if origin == "fixture" else corpus_text(name)


@pytest.mark.parametrize(
    ("origin", "name", "result", "content"),
    [
        ("fixture", "docker-results.yaml", "answers/answer.txt", "2718\n"),
        ("corpus", "docker-output.yaml", "output_custom/output.txt", "15\n"),
    ],
    ids=["fixture", "corpus"],
)
async def test_output_spec_publishes_its_result_file(
    nats_server: EmbeddedNats, tmp_path: Path, origin: str, name: str, result: str, content: str
) -> None:
    text = spec_text(origin, name)
    async with docker_stack(nats_server.url, tmp_path) as s, await s.client() as client:
        job_id = await client.submit(text)
        view = await client.wait(job_id, timeout=60)
        assert view.state == "Completed", view
        [folder] = await client.results(job_id, tmp_path / "results")
        assert (folder / result).read_text() == content


@pytest.mark.parametrize(
    ("origin", "name", "stdout"),
    [
        ("fixture", "docker-hello-nats.yaml", b"ahoy from a fixture\n"),
        ("corpus", "hello_world.yml", b"hello bacalhau world\n"),
    ],
    ids=["fixture", "corpus"],
)
async def test_hello_world_prints(
    nats_server: EmbeddedNats, tmp_path: Path, origin: str, name: str, stdout: bytes
) -> None:
    text = spec_text(origin, name)
    async with docker_stack(nats_server.url, tmp_path) as s, await s.client() as client:
        job_id = await client.submit(text)
        view = await client.wait(job_id, timeout=60)
        assert view.state == "Completed", view
        lines = [line async for line in client.logs(job_id)]
        assert b"".join(x.data for x in lines if x.stream == "stdout") == stdout
        assert not any(x.data for x in lines if x.stream == "stderr")


@pytest.mark.parametrize(
    ("origin", "name", "out", "err"),
    [
        # n from 1 to 6 every 0.2 s: odd ones to stdout, even ones to stderr
        ("fixture", "docker-log-streams.yaml", ("out", (1, 3, 5)), ("err", (2, 4, 6))),
        # busybox sh (hush/ash) knows `[[ ]]`, so the corpus script runs unchanged: ~5 s
        ("corpus", "log_emitter.yml", ("STDOUT", (1, 3, 5, 7, 9)), ("STDERR", (2, 4, 6, 8, 10))),
    ],
    ids=["fixture", "corpus"],
)
async def test_log_emitter_keeps_streams_apart(
    nats_server: EmbeddedNats,
    tmp_path: Path,
    origin: str,
    name: str,
    out: tuple[str, tuple[int, ...]],
    err: tuple[str, tuple[int, ...]],
) -> None:
    text = spec_text(origin, name)
    async with docker_stack(nats_server.url, tmp_path) as s, await s.client() as client:
        job_id = await client.submit(text)
        view = await client.wait(job_id, timeout=60)
        assert view.state == "Completed", view
        lines = [line async for line in client.logs(job_id)]
        stdout = b"".join(x.data for x in lines if x.stream == "stdout").decode().splitlines()
        stderr = b"".join(x.data for x in lines if x.stream == "stderr").decode().splitlines()
        assert [line.split()[:2] for line in stdout] == [[out[0], str(n)] for n in out[1]]
        assert [line.split()[:2] for line in stderr] == [[err[0], str(n)] for n in err[1]]


async def test_local_directory_input_and_result_paths(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("hello world\n")
    (data / "b.txt").write_text("one two three\n")
    spec = f"""
Name: count words
Type: batch
Count: 1
Tasks:
  - Name: main
    Engine:
      Type: docker
      Params:
        Image: {IMAGE}
        Entrypoint: [/bin/sh, -c]
        Parameters:
          - cat /inputs/*.txt | wc -w > /outputs/result.txt; ls /inputs
    InputSources:
      - Source:
          Type: localDirectory
          Params:
            SourcePath: {data}
        Target: /inputs
    ResultPaths:
      - Name: outputs
        Path: /outputs
    Publisher:
      Type: local
"""
    allowed = (AllowedPath(data.resolve()),)
    async with (
        docker_stack(nats_server.url, tmp_path, allow_local_paths=allowed) as s,
        await s.client() as client,
    ):
        job_id = await client.submit(spec)
        view = await client.wait(job_id, timeout=60)
        assert view.state == "Completed", view
        [folder] = await client.results(job_id, tmp_path / "results")
        assert (folder / "outputs" / "result.txt").read_text().strip() == "5"
        out = b"".join([x.data async for x in client.logs(job_id) if x.stream == "stdout"])
        assert out == b"a.txt\nb.txt\n"
    assert sorted(p.name for p in data.iterdir()) == ["a.txt", "b.txt"]  # mounted read-only


async def test_example_spec_is_valid() -> None:
    spec = load_spec((EXAMPLES / "docker-local-input.yaml").read_text())
    task = spec.task
    assert task.engine.type == "docker"
    assert [s.target for s in task.input_sources] == ["/inputs"]
    assert [(r.name, r.path) for r in task.result_paths] == [("outputs", "/outputs")]
