"""The request signer (``api.security.auth.Signer``) is HMAC-SHA256 with its key blocks hashed
once: it must equal the standard library's HMAC for every secret length (short, exactly one
block, longer than a block and so hashed first) and every payload."""

from __future__ import annotations

import hmac

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.api.security.auth import Signer


@settings(max_examples=300, deadline=None)
@given(secret=st.binary(max_size=200), payloads=st.lists(st.binary(max_size=300), max_size=3))
def test_signer_equals_hmac_sha256(secret: bytes, payloads: list[bytes]) -> None:
    signer = Signer(secret)
    for payload in payloads:  # one signer, many requests: its saved state is never consumed
        assert signer.digest(payload) == hmac.digest(secret, payload, "sha256")


def test_signer_at_the_block_boundary() -> None:
    for n in (63, 64, 65, 128):
        secret = bytes(range(n))
        assert Signer(secret).digest(b"x") == hmac.digest(secret, b"x", "sha256")
