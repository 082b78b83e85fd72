"""Address formats per asset: what a well-formed withdrawal destination looks like.

Shared by the API edge (bad input is refused before anything is held) and the custody
simulator (which mints deposit addresses in the same formats). Chains are simulated, so the
checks are shape checks (alphabet, prefix, length), not checksums.
"""

from __future__ import annotations

import hashlib
import re

_BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

_BTC = re.compile(rf"\A(bc1[{_BECH32}]{{39,59}}|[13][{_BASE58}]{{25,34}})\Z")
_EVM = re.compile(r"\A0x[0-9a-fA-F]{40}\Z")

#: asset -> (pattern, human description of the format)
FORMATS: dict[str, tuple[re.Pattern[str], str]] = {
    "BTC": (_BTC, "a bech32 address (bc1...) or a base58 address starting with 1 or 3"),
    "ETH": (_EVM, "0x followed by 40 hex digits"),
    "USDT": (_EVM, "0x followed by 40 hex digits (ERC-20)"),
}
DEFAULT_FORMAT = (re.compile(r"\A[0-9A-Za-z]{20,90}\Z"), "20-90 ASCII letters and digits")
MAX_ADDRESS = 90


def address_problem(asset: str, address: object) -> str:
    """Why `address` is not a valid destination for `asset`, or "" when it is."""
    if not isinstance(address, str) or not address:
        return "address is required"
    if len(address) > MAX_ADDRESS or not address.isascii():
        return f"address must be at most {MAX_ADDRESS} ASCII characters"
    pattern, description = FORMATS.get(asset, DEFAULT_FORMAT)
    if pattern.match(address) is None:
        return f"malformed {asset} address: expected {description}"
    return ""


def derive_address(asset: str, label: str) -> str:
    """A stable deposit address for (asset, label) in the asset's format."""
    digest = hashlib.blake2b(f"{asset}:{label}".encode(), digest_size=32).digest()
    if asset == "BTC":
        return "bc1q" + "".join(_BECH32[b % 32] for b in digest) + "".join(
            _BECH32[b % 32] for b in digest[:6])
    if FORMATS.get(asset, DEFAULT_FORMAT)[0] is _EVM:
        return "0x" + digest[:20].hex()
    return "dep" + digest[:20].hex()
