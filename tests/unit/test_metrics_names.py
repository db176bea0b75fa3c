"""The metrics follow Prometheus' naming, and the Grafana dashboard and docs/operations.md name
only metrics that exist (and document every one)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import REGISTRY

import compute.metrics
import orchestrator.metrics
import shared.probes

REPO = Path(__file__).resolve().parents[2]
MODULES = (orchestrator.metrics, compute.metrics, shared.probes)


def shoal_families() -> dict[str, str]:
    """Every shoal_ family in the default registry (name as exposed -> type)."""
    assert MODULES  # imported for their registrations
    out = {}
    for family in REGISTRY.collect():
        if family.name.startswith("shoal_"):
            name = family.name + ("_total" if family.type == "counter" else "")
            out[name] = family.type
    return out


def test_names_follow_prometheus_conventions() -> None:
    families = shoal_families()
    assert "shoal_jobs_submitted_total" in families
    assert "shoal_agent_execution_duration_seconds" in families
    for name, kind in families.items():
        assert re.fullmatch(r"shoal_[a-z_]+", name), name
        if kind == "counter":
            assert name.endswith("_total"), name
        if kind == "histogram":
            assert name.endswith("_seconds"), name


def test_the_dashboard_names_only_metrics_that_exist() -> None:
    families = shoal_families()
    dashboard = json.loads((REPO / "deploy" / "grafana" / "shoal-dashboard.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert exprs
    used = set()
    for expr in exprs:
        for name in re.findall(r"shoal_[a-z_]+", expr):
            base = re.sub(r"_(bucket|count|sum)$", "", name)
            assert name in families or base in families, f"{name} in {expr!r}"
            used.add(name if name in families else base)
    assert used == set(families), f"not on the dashboard: {set(families) - used}"


def test_operations_doc_lists_every_metric() -> None:
    doc = (REPO / "docs" / "operations.md").read_text()
    missing = [name for name in shoal_families() if f"`{name}`" not in doc]
    assert not missing, f"docs/operations.md does not describe {missing}"
