"""Encryption of secrets: AES-GCM under the orchestrator's master key at rest, and sealed
boxes (ephemeral X25519 + HKDF-SHA256 + AES-GCM) for the one node that runs an execution.

A sealed box is `ephemeral public key (32) | nonce (12) | ciphertext and tag`. Its key is
HKDF-SHA256 of the X25519 shared secret, salted with both public keys, so a box opens only
with the recipient's private key; its associated data (the execution id, the node id and the
variable name, `sealing_context`) must be given again to open it, so a box cannot be replayed
into another execution, node or variable.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from shared.errors import ShoalError

KEY_SIZE = 32
NONCE_SIZE = 12
_INFO = b"shoal.v1 sealed secret"


class SealingError(ShoalError):
    """A box or ciphertext that does not open: wrong key, wrong context, or tampered with."""


def b64(data: bytes) -> str:
    """Keys, boxes and ciphertexts travel as standard base64 text."""
    return base64.b64encode(data).decode()


def unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise SealingError(f"{what} is not base64") from None


# ---- at rest: the master key ---------------------------------------------------------------


def new_master_key() -> bytes:
    return os.urandom(KEY_SIZE)


def key_id(key: bytes) -> str:
    """A short fingerprint of a master key, stored beside each value: a value encrypted under
    another key is then told apart from a tampered one."""
    return hashlib.sha256(b"shoal master key id|" + key).hexdigest()[:16]


def load_or_create_key(path: Path) -> bytes:
    """The 32-byte key base64-encoded in `path`; a new random one written there (mode 0600)
    when the file does not exist."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        key = new_master_key()
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # written meanwhile by another process: use that one
            return load_or_create_key(path)
        with os.fdopen(fd, "w") as f:
            f.write(base64.b64encode(key).decode() + "\n")
        return key
    try:
        key = base64.b64decode(text, validate=True)
    except ValueError:
        key = b""
    if len(key) != KEY_SIZE:
        raise ShoalError(
            f"{path} does not hold a secrets key: expected {KEY_SIZE} random bytes, base64 "
            "encoded (remove it to have a new one made, which makes the secrets stored under "
            "the old one unreadable)"
        )
    return key


def encrypt(key: bytes, plaintext: bytes, context: bytes) -> bytes:
    """`nonce | ciphertext and tag` of `plaintext` under `key`, bound to `context`."""
    nonce = os.urandom(NONCE_SIZE)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, context)


def decrypt(key: bytes, data: bytes, context: bytes) -> bytes:
    if len(data) < NONCE_SIZE + 16:
        raise SealingError("the ciphertext is truncated")
    try:
        return AESGCM(key).decrypt(data[:NONCE_SIZE], data[NONCE_SIZE:], context)
    except InvalidTag:
        raise SealingError("the ciphertext does not open: wrong key, or tampered with") from None


# ---- in transit: sealed boxes for one node ---------------------------------------------------


def new_private_key() -> X25519PrivateKey:
    return X25519PrivateKey.generate()


def private_key_from(raw: bytes) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(raw)


def public_bytes(key: X25519PrivateKey | X25519PublicKey) -> bytes:
    public = key.public_key() if isinstance(key, X25519PrivateKey) else key
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


def sealing_context(execution_id: str, node_id: str, name: str) -> bytes:
    """The associated data of the box carrying variable `name` of an execution on a node."""
    return f"shoal.v1 secret|{execution_id}|{node_id}|{name}".encode()


def _box_key(shared: bytes, ephemeral: bytes, recipient: bytes) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=ephemeral + recipient, info=_INFO)
    return hkdf.derive(shared)


def seal(plaintext: bytes, recipient_public: bytes, context: bytes) -> bytes:
    """A box only the holder of the private key of `recipient_public` opens, with `context`."""
    if len(recipient_public) != KEY_SIZE:
        raise SealingError(f"a node public key is {KEY_SIZE} bytes, not {len(recipient_public)}")
    recipient = X25519PublicKey.from_public_bytes(recipient_public)
    ephemeral = X25519PrivateKey.generate()
    ephemeral_public = public_bytes(ephemeral)
    key = _box_key(ephemeral.exchange(recipient), ephemeral_public, recipient_public)
    return ephemeral_public + encrypt(key, plaintext, context)


def open_sealed(box: bytes, private_key: X25519PrivateKey, context: bytes) -> bytes:
    if len(box) < KEY_SIZE + NONCE_SIZE + 16:
        raise SealingError("the sealed value is truncated")
    ephemeral_public, rest = box[:KEY_SIZE], box[KEY_SIZE:]
    try:
        shared = private_key.exchange(X25519PublicKey.from_public_bytes(ephemeral_public))
    except ValueError:  # an all-zero shared secret: a malformed ephemeral key
        raise SealingError("the sealed value does not open: bad ephemeral key") from None
    key = _box_key(shared, ephemeral_public, public_bytes(private_key))
    try:
        return decrypt(key, rest, context)
    except SealingError:
        raise SealingError(
            "the sealed value does not open: it was sealed for another node or execution, "
            "or tampered with"
        ) from None


# ---- references in a task's Env ---------------------------------------------------------------

SECRET_PREFIX = "secret:"


def secret_refs(env: dict[str, str]) -> list[tuple[str, str]]:
    """(variable, secret name) for each `Env` value of the form `secret:<name>`."""
    return [(k, v[len(SECRET_PREFIX) :]) for k, v in env.items() if v.startswith(SECRET_PREFIX)]
