"""Sealing secrets: boxes open only for their node, execution and variable; tampering is
caught; the master key file; and a node's key pair in its state dir."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from compute.identity import NODE_KEY_FILE, node_key
from compute.task_env import open_secrets, task_environment
from shared import sealing, wire
from shared.errors import ExecutionFailed, ShoalError
from shared.sealing import SealingError, open_sealed, seal, sealing_context
from shared.spec import JobSpec, spec_from_data

PLAIN = b"hunter2-\xc3\xa9-correct horse"


def _box(recipient: bytes, execution: str = "e-1", node: str = "node-1", var: str = "DB") -> bytes:
    return seal(PLAIN, recipient, sealing_context(execution, node, var))


def test_round_trip() -> None:
    key = sealing.new_private_key()
    box = _box(sealing.public_bytes(key))
    assert open_sealed(box, key, sealing_context("e-1", "node-1", "DB")) == PLAIN
    assert PLAIN not in box


def test_every_box_differs() -> None:
    public = sealing.public_bytes(sealing.new_private_key())
    assert _box(public) != _box(public)  # a fresh ephemeral key and nonce each time


def test_another_node_cannot_open() -> None:
    mine, other = sealing.new_private_key(), sealing.new_private_key()
    box = _box(sealing.public_bytes(mine))
    with pytest.raises(SealingError, match="another node or execution"):
        open_sealed(box, other, sealing_context("e-1", "node-1", "DB"))


@pytest.mark.parametrize(
    ("execution", "node", "var"),
    [("e-2", "node-1", "DB"), ("e-1", "node-2", "DB"), ("e-1", "node-1", "OTHER")],
)
def test_wrong_context_does_not_open(execution: str, node: str, var: str) -> None:
    key = sealing.new_private_key()
    box = _box(sealing.public_bytes(key))
    with pytest.raises(SealingError):
        open_sealed(box, key, sealing_context(execution, node, var))


def test_tampering_is_caught() -> None:
    key = sealing.new_private_key()
    box = _box(sealing.public_bytes(key))
    context = sealing_context("e-1", "node-1", "DB")
    for i in (0, 31, 32, 43, 44, len(box) - 1):  # ephemeral key, nonce, ciphertext, tag
        bad = bytearray(box)
        bad[i] ^= 0x01
        with pytest.raises(SealingError):
            open_sealed(bytes(bad), key, context)
    with pytest.raises(SealingError, match="truncated"):
        open_sealed(box[:40], key, context)


def test_at_rest_encryption_is_bound_to_its_key_and_context() -> None:
    master = sealing.new_master_key()
    data = sealing.encrypt(master, PLAIN, b"default.db")
    assert sealing.decrypt(master, data, b"default.db") == PLAIN
    with pytest.raises(SealingError):
        sealing.decrypt(master, data, b"default.other")
    with pytest.raises(SealingError):
        sealing.decrypt(sealing.new_master_key(), data, b"default.db")


def test_master_key_file_is_made_private_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "state" / "secrets.key"
    key = sealing.load_or_create_key(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert base64.b64decode(path.read_text()) == key
    assert sealing.load_or_create_key(path) == key
    path.write_text("not a key\n")
    with pytest.raises(ShoalError, match="does not hold a secrets key"):
        sealing.load_or_create_key(path)


def test_node_key_is_kept_in_the_state_dir(tmp_path: Path) -> None:
    key = node_key(tmp_path)
    path = tmp_path / NODE_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sealing.public_bytes(node_key(tmp_path)) == sealing.public_bytes(key)


def _spec() -> JobSpec:
    return spec_from_data(
        {
            "Name": "s",
            "Type": "batch",
            "Tasks": [
                {
                    "Name": "main",
                    "Engine": {"Type": "noop"},
                    "Env": {"DB_PASSWORD": "secret:db-password", "PLAIN": "x"},
                }
            ],
        }
    )


def test_the_agent_side_opens_into_the_task_env_only() -> None:
    key = sealing.new_private_key()
    spec = _spec()
    box = seal(PLAIN, sealing.public_bytes(key), sealing_context("e-1", "node-1", "DB_PASSWORD"))
    order = wire.ExecutionOrder(
        execution_id="e-1",
        job_id="j-1",
        job_type="batch",
        secrets=[wire.SealedEnv(name="DB_PASSWORD", secret="db-password", sealed=sealing.b64(box))],
    )
    opened = open_secrets(order, spec, key, "node-1")
    assert opened == {"DB_PASSWORD": PLAIN.decode()}
    env = task_environment(order, spec, "node-1", opened)
    assert env["DB_PASSWORD"] == PLAIN.decode() and env["PLAIN"] == "x"
    # Without the opened value, the reference is left out, never passed on as its text.
    assert "DB_PASSWORD" not in task_environment(order, spec, "node-1")
    # On another node (its own key, its own id) it does not open, and says so without the value.
    with pytest.raises(ExecutionFailed, match="does not open on node-2") as failed:
        open_secrets(order, spec, sealing.new_private_key(), "node-2")
    assert PLAIN.decode() not in str(failed.value)


def test_an_order_without_the_sealed_value_is_refused() -> None:
    order = wire.ExecutionOrder(execution_id="e-1", job_id="j-1", job_type="batch")
    with pytest.raises(ExecutionFailed, match="Env DB_PASSWORD refers to secret 'db-password'"):
        open_secrets(order, _spec(), sealing.new_private_key(), "node-1")


def test_hello_without_a_key_is_what_an_older_agent_sends() -> None:
    hello = wire.Hello(node=wire.NodeInfo(id="n"))
    assert b"PublicKey" not in wire.encode(hello)
    keyed = wire.Hello(node=wire.NodeInfo(id="n"), public_key="a2V5")
    assert wire.decode(wire.encode(keyed), wire.Hello).public_key == "a2V5"
