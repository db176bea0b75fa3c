"""The `shoal` command as a user runs it: every exit code, --version, the connection options
after a command, `docker run -o`, and shell completion through the lazily loaded commands.

Each invocation starts a Python that imports the CLI: they run side by side where they can.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
from pathlib import Path

import yaml

from shared.natsserver import EmbeddedNats
from tests.conftest import eventually, terminate
from tests.integration.helpers_jobs import EXAMPLES, SHOAL, free_port, noop_job, run_cli
from tests.integration.stack import stack

HELLO = EXAMPLES / "wasm" / "hello.wat"


def _spec(tmp_path: Path, name: str, spec: dict[str, object]) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(path)


async def test_every_exit_code(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    """0 ok, 1 error, 2 bad input, 3 job failed (whatever the task's own exit code), 4 wait
    timed out, 5 NATS (or every orchestrator) unreachable."""
    ok = _spec(tmp_path, "ok", noop_job("exit-ok", stdout="fine\n"))
    exits_7 = _spec(tmp_path, "seven", noop_job("exit-seven", exit_code=7))
    slow = _spec(tmp_path, "slow", noop_job("exit-slow", sleep=30))
    bad = _spec(tmp_path, "bad", {"Type": "batchy", "Tasks": [{"Engine": {"Type": "noop"}}]})
    dead = f"nats://127.0.0.1:{free_port()}"
    url = nats_server.url
    no_orchestrator = await run_cli("node", "list", url=url)
    assert no_orchestrator.code == 5, no_orchestrator
    assert "no orchestrator answered node.list" in no_orchestrator.stderr, no_orchestrator
    async with stack(url, tmp_path, agents=1):
        done = await asyncio.gather(
            run_cli("job", "run", ok, url=url),
            run_cli("job", "describe", "j-does-not-exist", url=url),
            run_cli("job", "run", bad, url=url),
            run_cli("job", "run", "--no-such-option", ok, url=url),
            run_cli("job", "run", exits_7, url=url),
            run_cli("job", "run", slow, "--wait-timeout", "0.5", url=url),
            run_cli("node", "list", url=dead),
        )
    for result, code in zip(done, [0, 1, 2, 2, 3, 4, 5], strict=True):
        assert result.code == code, (code, result)
        assert "Traceback" not in result.stderr, result
    assert "fine" in done[0].stdout, done[0]
    assert "j-does-not-exist" in done[1].stderr, done[1]
    assert "batchy" in done[2].stderr, done[2]
    assert "exit code 7" in done[4].stderr, done[4]
    assert "Still not done after 0.5s" in done[5].stderr, done[5]
    assert "cannot reach NATS" in done[6].stderr, done[6]


async def test_version_is_the_installed_package_s(tmp_path: Path) -> None:
    done = await run_cli("--version", url="nats://127.0.0.1:1")
    assert done.code == 0, done
    assert done.stdout.strip() == f"shoal {importlib.metadata.version('shoal')}", done


async def test_connection_options_after_the_command(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    """`--nats` (and --creds, --tls-ca) after any connecting command, as its help says;
    the environment (SHOAL_NATS_URL) points nowhere, so only the option can have worked."""
    url = nats_server.url
    dead = f"nats://127.0.0.1:{free_port()}"
    ok = _spec(tmp_path, "ok", noop_job("after-command"))
    async with stack(url, tmp_path, agents=1) as s, await s.client() as client:
        compute = await asyncio.create_subprocess_exec(
            str(SHOAL),
            "compute",
            "--nats",
            url,
            "--name",
            "n1",
            "--state-dir",
            str(tmp_path / "n1"),
            env={"SHOAL_NATS_URL": dead, "PATH": "/usr/bin:/bin"},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:

            async def n1_registered() -> bool:
                return "n1" in {n.id for n in await client.nodes()}

            await eventually(n1_registered, timeout=30, what="n1 registered via --nats")
        finally:
            await terminate(compute)
        listed, run, nested, help_text, local = await asyncio.gather(
            run_cli("node", "list", "-o", "json", f"--nats={url}", url=dead),
            run_cli("job", "run", ok, "--nats", url, "--id-only", url=dead),
            run_cli("--nats", dead, "job", "--nats", url, "list", url=dead),
            run_cli("--help", url=dead),
            run_cli("job", "validate", ok, "--nats", url, url=dead),
        )
    assert listed.code == 0, listed
    assert "n1" in {n["ID"] for n in json.loads(listed.stdout)}, listed
    assert run.code == 0 and run.stdout.strip().startswith("j-"), run
    assert nested.code == 0, nested  # after the group, over the one before it
    assert help_text.code == 0 and "SHOAL_NATS_URL" in help_text.stdout, help_text
    assert local.code == 2 and "No such option '--nats'" in local.stderr, local  # never connects


async def test_docker_run_output_and_the_task_s_own_options(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    """`docker run -o FORMAT` like every command (`--format` still works), `-o NAME:PATH` a
    result path as in Bacalhau; after `--`, `--nats x` is the task's. No node here runs docker,
    so the job fails at once (exit 3) and prints its view. `wasm run -o` too."""
    url = nats_server.url
    command = ("--", "sh", "-c", "echo", "--nats", "x")
    async with stack(url, tmp_path, agents=1):
        as_json, as_yaml, two_formats, wasm_json, wasm_args = await asyncio.gather(
            run_cli(
                "docker", "run", "-o", "json", "-o", "out:/outputs", "alpine", *command, url=url
            ),
            run_cli("docker", "run", "--format", "yaml", "alpine", url=url),
            run_cli("docker", "run", "-o", "json", "-o", "yaml", "alpine", url=url),
            run_cli("wasm", "run", "-o", "json", str(HELLO), "a", url=url),
            run_cli("wasm", "run", str(HELLO), "--", "-o", "x", url=url),
        )
    assert as_json.code == 3, as_json
    view = json.loads(as_json.stdout)
    assert view["State"] == "Failed" and "docker" in view["StateMessage"], view
    task = view["Spec"]["Tasks"][0]
    assert task["Engine"]["Params"]["Parameters"] == ["sh", "-c", "echo", "--nats", "x"], task
    assert task["ResultPaths"] == [{"Name": "out", "Path": "/outputs"}], task
    assert as_yaml.code == 3 and yaml.safe_load(as_yaml.stdout)["State"] == "Failed", as_yaml
    assert "--format is deprecated; use -o yaml" in as_yaml.stderr, as_yaml
    assert two_formats.code == 2 and "give one output format" in two_formats.stderr, two_formats
    assert wasm_json.code == 0 and json.loads(wasm_json.stdout)["State"] == "Completed", wasm_json
    assert wasm_args.code == 0, wasm_args
    assert "Hello from Shoal on WebAssembly! -o x" in wasm_args.stdout, wasm_args


async def _complete(words: str, shell: str = "bash") -> list[str]:
    done = await run_cli(
        url="nats://127.0.0.1:1",
        env={
            "_SHOAL_COMPLETE": f"{shell}_complete",
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(words.split(" ")) - 1),
        },
    )
    assert done.code == 0, done
    return [line.split(",", 1)[1] for line in done.stdout.splitlines() if "," in line]


async def test_shell_completion_through_the_lazy_commands() -> None:
    source, commands, verbs, options, formats = await asyncio.gather(
        run_cli(url="nats://127.0.0.1:1", env={"_SHOAL_COMPLETE": "bash_source"}),
        _complete("shoal no"),
        _complete("shoal node re"),
        _complete("shoal compute --nat"),
        _complete("shoal docker run -o "),
    )
    assert source.code == 0 and "complete -o nosort -F _shoal_completion shoal" in source.stdout
    assert commands == ["node"]
    assert verbs == ["reject", "remove"]
    assert options == ["--nats"]
    assert formats == ["table", "json", "yaml"]
