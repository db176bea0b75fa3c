"""`shoal auth`: namespaces and admins, private inbox prefixes, and adding one identity later."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml
from click.testing import CliRunner

from cli.auth import auth, generate
from cli.auth_roles import known, parse_user
from shared.bus import creds_namespace, creds_options
from shared.natsserver import nats_server_binary
from shared.sealing import load_or_create_key


def creds(out: Path, name: str) -> dict[str, str]:
    data: dict[str, str] = yaml.safe_load((out / "creds" / f"{name}.creds").read_text())
    return data


def server_accepts(out: Path) -> None:
    result = subprocess.run(
        [nats_server_binary(), "-t", "-c", str(out / "nats-server.conf")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr


def test_users_take_namespaces_and_admins_every_one(tmp_path: Path) -> None:
    ids = generate(
        tmp_path,
        nodes=["node-1"],
        users=["alice:team-a", "carol:team-a+team-b", "dave"],
        admins=["root"],
    )
    by_name = {i.name: i for i in ids}
    assert by_name["carol"].namespaces == ("team-a", "team-b")
    assert by_name["dave"].namespaces == ("default",)
    carol = by_name["carol"].permissions
    assert "shoal.v1.ns.team-b.api.>" in carol.publish
    assert "shoal.v1.ns.team-a.state.>" in carol.subscribe
    assert "$JS.API.CONSUMER.CREATE.SHOAL_LOGS.*.shoal.v1.ns.team-b.logs.>" in carol.publish
    assert not [s for s in carol.publish if "team-c" in s or ".ns.*." in s]
    assert "shoal.v1.api.>" in by_name["root"].permissions.publish
    assert "shoal.v1.ns.*.state.>" in by_name["root"].permissions.subscribe
    assert creds(tmp_path, "carol")["namespace"] == "team-a"
    assert creds_namespace(str(tmp_path / "creds" / "carol.creds")) == "team-a"
    assert creds_namespace(str(tmp_path / "creds" / "root.creds")) is None
    options = creds_options(str(tmp_path / "creds" / "node-1.creds"))
    assert options["inbox_prefix"] == "_INBOX.node-1"
    assert [k.role for k in known((tmp_path / "users.conf").read_text())] == [
        "orchestrator",
        "compute",
        "user",
        "user",
        "user",
        "admin",
    ]
    server_accepts(tmp_path)


def test_parse_user() -> None:
    assert parse_user("alice") == ("alice", ("default",))
    assert parse_user("carol:team-a+team-b+team-a") == ("carol", ("team-a", "team-b"))


def test_init_refuses_identities_sharing_an_inbox(tmp_path: Path) -> None:
    runner = CliRunner()
    for args, expected in (
        (["--nodes", "alice", "--users", "alice"], "'alice' is named twice"),
        (["--nodes", "ip-1.x", "--users", "ip-1-x"], "both become 'ip-1-x'"),
        (["--users", "orchestrator-1"], "'orchestrator-1' is named twice"),
        (["--users", "bob", "--admins", "bob"], "'bob' is named twice"),
        (["--users", "bob:team.b"], "namespace 'team.b' must be"),
    ):
        result = runner.invoke(auth, ["init", "--out", str(tmp_path / "x"), *args])
        assert result.exit_code == 2, (args, result.output)
        assert expected in result.output, (args, result.output)
    assert not (tmp_path / "x").exists()


def test_add_user_and_node_keep_everyone_else(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "site"
    init = ["init", "--out", str(out), "--nodes", "node-1", "--users", "alice:team-a"]
    assert runner.invoke(auth, init).exit_code == 0
    before = {p.name: p.read_text() for p in (out / "creds").iterdir()}
    conf_before = (out / "users.conf").read_text()

    result = runner.invoke(
        auth, ["add-user", "--out", str(out), "bob", "--namespaces", "team-b,team-c"]
    )
    assert result.exit_code == 0, result.output
    assert "reload" in result.output
    result = runner.invoke(auth, ["add-user", "--out", str(out), "root", "--admin"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(auth, ["add-node", "--out", str(out), "ip-10-0-0-2.ec2.internal"])
    assert result.exit_code == 0, result.output

    after = {p.name: p.read_text() for p in (out / "creds").iterdir()}
    assert {k: after[k] for k in before} == before  # nobody else's password changed
    conf = (out / "users.conf").read_text()
    for block in conf_before.split("# >>> ")[1:-1]:
        assert block.split("# <<<")[0] in conf
    assert creds(out, "bob")["namespace"] == "team-b"
    assert creds(out, "bob")["inbox_prefix"] == "_INBOX.bob"
    assert (
        creds(out, "ip-10-0-0-2.ec2.internal")["inbox_prefix"] == "_INBOX.ip-10-0-0-2-ec2-internal"
    )
    assert [(k.name, k.role, k.namespaces) for k in known(conf)][-3:] == [
        ("bob", "user", ("team-b", "team-c")),
        ("root", "admin", ()),
        ("ip-10-0-0-2.ec2.internal", "compute", ()),
    ]
    secrets = {
        d["metadata"]["name"]: d for d in yaml.safe_load_all((out / "k8s-secrets.yaml").read_text())
    }
    assert secrets["shoal-nats-auth"]["stringData"]["users.conf"] == conf
    assert "ip-10-0-0-2.ec2.internal.creds" in secrets["shoal-creds"]["stringData"]
    server_accepts(out)

    # Adding again is refused unless replaced; a replaced user gets a new password only.
    again = runner.invoke(auth, ["add-user", "--out", str(out), "bob"])
    assert again.exit_code != 0 and "--force" in again.output
    old = creds(out, "bob")["password"]
    replaced = runner.invoke(auth, ["add-user", "--out", str(out), "bob", "--force"])
    assert replaced.exit_code == 0, replaced.output
    assert creds(out, "bob")["password"] != old
    assert creds(out, "bob")["namespace"] == "default"
    assert [k.name for k in known((out / "users.conf").read_text())].count("bob") == 1
    server_accepts(out)
    # An identity whose inbox another already has is refused.
    clash = runner.invoke(auth, ["add-node", "--out", str(out), "ip-10-0-0-2-ec2-internal"])
    assert clash.exit_code == 2 and "both become" in clash.output
    # The secrets' master key survives a forced init: it decrypts the stored secrets.
    key = load_or_create_key(out / "secrets.key")
    assert len(key) == 32
    assert runner.invoke(auth, [*init, "--force"]).exit_code == 0
    assert load_or_create_key(out / "secrets.key") == key
    missing = runner.invoke(auth, ["add-user", "--out", str(tmp_path / "none"), "x"])
    assert missing.exit_code != 0 and "shoal auth init" in missing.output
