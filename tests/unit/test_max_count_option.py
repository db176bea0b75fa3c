"""`--max-count`, `--job-retention` and the storage limits reach OrchestratorConfig."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

import click
import pytest
from click.testing import CliRunner

from cli import devstack, services
from orchestrator.service import OrchestratorConfig


@pytest.fixture
def configs(monkeypatch: pytest.MonkeyPatch) -> list[OrchestratorConfig]:
    """The configs the commands build; they then stop instead of serving."""
    seen: list[OrchestratorConfig] = []

    def config(**kwargs: Any) -> OrchestratorConfig:
        seen.append(OrchestratorConfig(**kwargs))
        return seen[-1]

    def run(main: Coroutine[Any, Any, None]) -> None:
        main.close()

    for module in (services, devstack):
        monkeypatch.setattr(module, "OrchestratorConfig", config)
        monkeypatch.setattr(module, "run", run)
    return seen


@pytest.mark.parametrize("command", [services.orchestrator, devstack.devstack])
def test_flag_env_and_default(command: click.Command, configs: list[OrchestratorConfig]) -> None:
    runner = CliRunner()
    for args, env in (([], {}), (["--max-count", "7"], {}), ([], {"SHOAL_MAX_COUNT": "9"})):
        done = runner.invoke(command, args, env=env)
        assert done.exit_code == 0, done.output
    assert [c.max_count for c in configs] == [100_000, 7, 9]
    refused = runner.invoke(command, ["--max-count", "0"])
    assert refused.exit_code == 2, refused.output
    assert "--max-count" in refused.output


@pytest.mark.parametrize("command", [services.orchestrator, devstack.devstack])
def test_retention_and_storage_limits_reach_the_config(
    command: click.Command, configs: list[OrchestratorConfig]
) -> None:
    runner = CliRunner()
    done = runner.invoke(command, [])
    assert done.exit_code == 0, done.output
    args = ["--job-retention", "30m", "--logs-max-bytes", "10Mi", "--results-max-bytes", "0"]
    done = runner.invoke(command, args)
    assert done.exit_code == 0, done.output
    default, given = configs
    assert (default.job_retention, default.logs_max_bytes) == (7 * 24 * 3600.0, 1 << 30)
    assert (given.job_retention, given.logs_max_bytes, given.results_max_bytes) == (
        1800.0,
        10 << 20,
        None,  # 0: no limit
    )
    refused = runner.invoke(command, ["--logs-max-bytes", "lots"])
    assert refused.exit_code == 2 and "--logs-max-bytes" in refused.output
