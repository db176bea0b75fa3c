"""Node names (host and Kubernetes node names) to node ids, in `shoal compute` and `shoal auth`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cli.auth import auth, generate
from shared import subjects


@pytest.mark.parametrize(
    ("name", "node_id"),
    [
        ("node-1", "node-1"),
        ("under_score", "under_score"),
        ("ip-10-0-0-1.ec2.internal", "ip-10-0-0-1-ec2-internal"),
        ("gke-pool-1.c.my-project.internal", "gke-pool-1-c-my-project-internal"),
        ("a*b>c d\te", "a-b-c-d-e"),
        ("nœud", "n-ud"),
        (".", "-"),
    ],
)
def test_node_id_from_replaces_what_a_token_cannot_hold(name: str, node_id: str) -> None:
    assert subjects.node_id_from(name) == node_id
    assert subjects.check_token(node_id) == node_id


def test_node_id_from_refuses_empty_and_keeps_long_names_distinct() -> None:
    with pytest.raises(ValueError, match="empty"):
        subjects.node_id_from("")
    a = subjects.node_id_from("x" * 200 + ".a")
    b = subjects.node_id_from("x" * 200 + ".b")
    assert len(a) == len(b) == 128 and a != b
    assert a == subjects.node_id_from("x" * 200 + ".a")  # deterministic
    assert subjects.node_id_from("y" * 128) == "y" * 128


def test_auth_keeps_the_name_and_scopes_permissions_by_node_id(tmp_path: Path) -> None:
    name = "ip-10-0-0-1.ec2.internal"
    ids = generate(tmp_path, nodes=[name, "node-2"], users=["alice"])
    node = next(i for i in ids if i.role == "compute" and i.name == name)
    assert node.node_id == "ip-10-0-0-1-ec2-internal"
    assert "shoal.v1.node.ip-10-0-0-1-ec2-internal.>" in node.permissions.publish
    assert "shoal.v1.compute.ip-10-0-0-1-ec2-internal.>" in node.permissions.subscribe
    assert not any(name in s for s in (*node.permissions.publish, *node.permissions.subscribe))
    # The DaemonSet mounts /etc/shoal/creds/$(NODE_NAME).creds: the file keeps the raw name.
    creds = yaml.safe_load((tmp_path / "creds" / f"{name}.creds").read_text())
    assert creds["user"] == name
    secrets = list(yaml.safe_load_all((tmp_path / "k8s-secrets.yaml").read_text()))
    creds_secret = next(d for d in secrets if d["metadata"]["name"] == "shoal-creds")
    assert f"{name}.creds" in creds_secret["stringData"]
    users = (tmp_path / "users.conf").read_text()
    assert f'user: "{name}"' in users
    assert "compute (node id ip-10-0-0-1-ec2-internal)" in users


def test_auth_init_refuses_unusable_or_colliding_node_names(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(
        auth, ["init", "--out", str(tmp_path / "ok"), "--nodes", "ip-10-0-0-1.ec2.internal"]
    )
    assert ok.exit_code == 0, ok.output
    assert "(node id ip-10-0-0-1-ec2-internal)" in ok.output
    for nodes, expected in (
        ("a/b", "node name 'a/b' must be"),
        ("../etc", "node name '../etc' must be"),
        ("a b", "node name 'a b' must be"),
        ("ip-1.x,ip-1-x", "'ip-1.x' and 'ip-1-x' both become node id 'ip-1-x'"),
    ):
        bad = runner.invoke(auth, ["init", "--out", str(tmp_path / "bad"), "--nodes", nodes])
        assert bad.exit_code == 2, (nodes, bad.output)
        assert expected in bad.output, (nodes, bad.output)
    assert not (tmp_path / "bad").exists()
