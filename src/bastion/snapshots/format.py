"""Snapshot file format: ``magic | header_len u32 | header_crc u32 | header | payload``.

The header is a versioned msgpack struct (format version, seq, term, state hash, payload length
and checksum), so a reader can check everything before trusting a single payload byte.
"""

from __future__ import annotations

import struct

import google_crc32c
import msgspec

from bastion.journal.errors import DurabilityError

MAGIC = b"BSTNSNAP"
FORMAT_VERSION = 1
_LENGTHS = struct.Struct("<II")
PREFIX_SIZE = len(MAGIC) + _LENGTHS.size
MAX_HEADER = 64 * 1024


class SnapshotHeader(msgspec.Struct, kw_only=True, frozen=True):
    """``term`` is the journal epoch of record ``seq``: (seq, term) names one timeline position."""

    format_version: int
    seq: int
    term: int
    state_hash: str
    payload_len: int
    payload_crc32c: int
    name: str
    created_ms: int


class SnapshotCorruptError(DurabilityError):
    code = "SNAPSHOT_CORRUPT"


def encode(header: SnapshotHeader) -> bytes:
    raw = msgspec.msgpack.encode(header)
    return MAGIC + _LENGTHS.pack(len(raw), google_crc32c.value(raw)) + raw


def payload_crc(payload: bytes | memoryview) -> int:
    return int(google_crc32c.value(payload))


def decode_header(blob: bytes, source: str) -> tuple[SnapshotHeader, int]:
    """Parse the header at the start of ``blob``; returns it and the payload offset."""
    if len(blob) < PREFIX_SIZE or blob[: len(MAGIC)] != MAGIC:
        raise SnapshotCorruptError(f"{source}: not a Bastion snapshot (bad magic)")
    length, crc = _LENGTHS.unpack_from(blob, len(MAGIC))
    if length > MAX_HEADER or PREFIX_SIZE + length > len(blob):
        raise SnapshotCorruptError(f"{source}: header length {length} is impossible")
    raw = blob[PREFIX_SIZE : PREFIX_SIZE + length]
    if google_crc32c.value(raw) != crc:
        raise SnapshotCorruptError(f"{source}: header checksum mismatch")
    try:
        header = msgspec.msgpack.decode(raw, type=SnapshotHeader)
    except msgspec.DecodeError as exc:
        raise SnapshotCorruptError(f"{source}: header unreadable ({exc})") from exc
    if header.format_version != FORMAT_VERSION:
        raise SnapshotCorruptError(
            f"{source}: format version {header.format_version} is not supported "
            f"(this build reads {FORMAT_VERSION})"
        )
    return header, PREFIX_SIZE + length


def check_payload(header: SnapshotHeader, payload: bytes | memoryview, source: str) -> None:
    if len(payload) != header.payload_len:
        raise SnapshotCorruptError(
            f"{source}: payload is {len(payload)} bytes, header says {header.payload_len}"
        )
    if payload_crc(payload) != header.payload_crc32c:
        raise SnapshotCorruptError(f"{source}: payload checksum mismatch")
