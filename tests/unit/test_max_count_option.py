"""`--max-count` and SHOAL_MAX_COUNT reach OrchestratorConfig.max_count on both commands."""

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
