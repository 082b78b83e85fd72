"""On-disk framing: one block per group-commit write.

    magic "BJNL" | crc u32 | count u32 | epoch u32 | first_seq u64 | body_len u64   (32 bytes)
    table: count x (length u32, crc32c u32)      one entry per record
    body:  the records' payloads, concatenated

Record ``i`` has sequence number ``first_seq + i``, its own length and its own CRC32C. The block
``crc`` covers the header fields and the whole table, so no length, checksum or sequence number
is trusted before it is verified; then every payload is checked against its own CRC. A block is
what one fdatasync makes durable, so a torn write always tears whole unacknowledged blocks.
Building a block is a handful of C-level calls, not a Python loop per record (the hot path).
"""

from __future__ import annotations

import itertools
import struct
import sys
from array import array
from enum import Enum
from typing import NamedTuple

import google_crc32c

MAGIC = b"BJNL"
_HEAD = struct.Struct("<4sIIIQQ")
_FIELDS = struct.Struct("<IIQQ")
HEADER_SIZE = _HEAD.size
ENTRY_SIZE = 8
MAX_RECORD = 256 * 1024 * 1024
MAX_COUNT = 1 << 24
_crc = google_crc32c.value
_extend = google_crc32c.extend
_SWAP = sys.byteorder != "little"


class Block(NamedTuple):
    first_seq: int
    epoch: int
    offset: int
    end: int
    payloads: list[bytes]

    @property
    def last_seq(self) -> int:
        return self.first_seq + len(self.payloads) - 1


class Framed(NamedTuple):
    """A block encoded ahead of the write (see ``LocalJournal.frame``)."""

    data: bytes
    first_seq: int
    count: int  # type: ignore[assignment]  # (shadows tuple.count, never called here)
    epoch: int


class Problem(Enum):
    SHORT = "block extends past end of file"
    BAD_HEADER = "block header checksum mismatch"
    BAD_RECORD = "record checksum mismatch"


class Damage(NamedTuple):
    problem: Problem
    seq: int | None


def overhead(count: int) -> int:
    return HEADER_SIZE + ENTRY_SIZE * count


def encode_block(records: list[bytes], first_seq: int, epoch: int) -> bytes:
    """One block for ``records`` numbered from ``first_seq``."""
    entries = zip(map(len, records), map(_crc, records), strict=True)
    table = array("I", itertools.chain.from_iterable(entries))
    if _SWAP:
        table.byteswap()
    table_bytes = table.tobytes()
    body_len = sum(map(len, records))
    fields = _FIELDS.pack(len(records), epoch, first_seq, body_len)
    crc = _extend(_crc(fields), table_bytes)
    return b"".join([MAGIC, crc.to_bytes(4, "little"), fields, table_bytes, *records])


def parse(buf: bytes, offset: int) -> Block | Damage:
    """Decode and verify the block at ``offset``."""
    size = len(buf)
    if offset + HEADER_SIZE > size:
        return Damage(Problem.SHORT, None)
    magic, crc, count, epoch, first_seq, body_len = _HEAD.unpack_from(buf, offset)
    if magic != MAGIC or count == 0 or count > MAX_COUNT or body_len > MAX_RECORD * count:
        return Damage(Problem.BAD_HEADER, None)
    table_end = offset + HEADER_SIZE + ENTRY_SIZE * count
    if table_end > size:
        return Damage(Problem.SHORT, None)
    fields = buf[offset + 8 : offset + HEADER_SIZE]
    if _extend(_crc(fields), buf[offset + HEADER_SIZE : table_end]) != crc:
        return Damage(Problem.BAD_HEADER, None)
    end = table_end + body_len
    if end > size:
        return Damage(Problem.SHORT, first_seq)
    table = array("I")
    table.frombytes(buf[offset + HEADER_SIZE : table_end])
    if _SWAP:
        table.byteswap()
    lengths = table[0::2]
    if sum(lengths) != body_len:
        return Damage(Problem.BAD_HEADER, None)
    payloads: list[bytes] = []
    pos = table_end
    for length in lengths:
        payloads.append(buf[pos : pos + length])
        pos += length
    crcs = table[1::2]
    if list(map(_crc, payloads)) != crcs.tolist():
        bad = next(i for i, p in enumerate(payloads) if _crc(p) != crcs[i])
        return Damage(Problem.BAD_RECORD, first_seq + bad)
    return Block(first_seq, epoch, offset, end, payloads)


SECTOR = 512
_ZERO_SECTOR = bytes(SECTOR)


def looks_torn(buf: bytes, offset: int, damage: Damage) -> bool:
    """Damage at the very end that a crash can cause: the file ends inside the block, or the
    last write left never-written (zero) sectors. A complete block with wrong bytes is not a
    torn write and must not be truncated away."""
    if damage.problem is Problem.SHORT or not buf[offset:].strip(b"\0"):
        return True
    first = -(-offset // SECTOR) * SECTOR
    return any(
        buf[pos : pos + SECTOR] == _ZERO_SECTOR
        for pos in range(first, len(buf) - SECTOR + 1, SECTOR)
    )


def later_valid_block(buf: bytes, offset: int, min_seq: int) -> Block | None:
    """An intact block past damaged bytes, holding seqs at or after ``min_seq``.

    This separates a torn tail (nothing intact after the damage: an unacknowledged partial
    write) from mid-log corruption (intact, acknowledged blocks follow it).
    """
    pos = buf.find(MAGIC, offset + 1)
    while pos != -1:
        found = parse(buf, pos)
        if isinstance(found, Block) and found.last_seq >= min_seq:
            return found
        pos = buf.find(MAGIC, pos + 1)
    return None
