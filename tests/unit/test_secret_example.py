"""examples/secret-env.yaml: a valid spec whose Env refers to a secret, as its header says."""

from __future__ import annotations

from pathlib import Path

from shared.sealing import secret_refs
from shared.spec import load_spec

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "secret-env.yaml"


def test_the_example_refers_to_a_secret() -> None:
    text = EXAMPLE.read_text()
    spec = load_spec(text)
    assert secret_refs(spec.task.env) == [("DB_PASSWORD", "db-password")]
    assert "shoal secret create db-password" in text
    # The reference is what the stored spec keeps.
    assert spec.dump()["Tasks"][0]["Env"] == {"DB_PASSWORD": "secret:db-password"}
