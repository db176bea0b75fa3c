"""A credentials or CA file that cannot be read is bad input (exit 2) naming the file, not an
OS error without a name: checked before any connection is tried."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.bus import Bus
from shared.errors import InvalidSpec

NOWHERE = "nats://127.0.0.1:1"  # never reached: the files are read first


async def test_a_missing_credentials_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "alice.creds"
    with pytest.raises(InvalidSpec, match=f"cannot read credentials file {missing}"):
        await Bus.connect(NOWHERE, creds=str(missing))


@pytest.mark.parametrize("content", [None, "not a certificate\n"], ids=["missing", "garbage"])
async def test_an_unreadable_ca_is_named(tmp_path: Path, content: str | None) -> None:
    ca = tmp_path / "ca.pem"
    if content is not None:
        ca.write_text(content)
    with pytest.raises(InvalidSpec, match=f"cannot read the TLS CA certificate {ca}"):
        await Bus.connect(NOWHERE, tls_ca=str(ca))
