"""Segment files: naming, listing and scanning.

An open segment is ``<first>.seg``; at rollover it is sealed by renaming it ``<first>-<last>.seg``,
so the whole log's coverage (and any gap, e.g. a deleted segment) is visible from names alone.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bastion.journal.errors import JournalCorruptError
from bastion.journal.framing import Block, Damage, later_valid_block, looks_torn, parse

_NAME = re.compile(r"^(\d{20})(?:-(\d{20}))?\.seg$")


@dataclass
class Segment:
    path: Path
    first: int
    sealed_last: int | None

    @property
    def name(self) -> str:
        return self.path.name


def active_name(first: int) -> str:
    return f"{first:020d}.seg"


def sealed_name(first: int, last: int) -> str:
    return f"{first:020d}-{last:020d}.seg"


def list_segments(directory: Path) -> list[Segment]:
    """Segments sorted by first sequence; unrelated files are ignored."""
    found: list[Segment] = []
    if not directory.is_dir():
        return found
    for entry in os.scandir(directory):
        m = _NAME.match(entry.name)
        if m:
            last = int(m.group(2)) if m.group(2) else None
            found.append(Segment(Path(entry.path), int(m.group(1)), last))
    found.sort(key=lambda s: s.first)
    return found


class Scanner:
    """Walks one segment's blocks validating everything: checksums, contiguous seqs from
    ``first_seq``, non-decreasing epochs. Damage that may be a torn tail (only where
    ``tail_allowed``: nothing intact follows it) ends the walk and is recorded in ``torn_at``;
    anything else raises ``JournalCorruptError`` naming segment, offset and seq."""

    def __init__(
        self, buf: bytes, segment: str, first_seq: int, *, tail_allowed: bool, min_epoch: int = 0
    ) -> None:
        self.buf = buf
        self.segment = segment
        self.tail_allowed = tail_allowed
        self.next_seq = first_seq
        self.last_epoch = min_epoch
        self.valid_end = 0
        self.torn_at: int | None = None
        self.torn_reason = ""

    @property
    def last_seq(self) -> int:
        return self.next_seq - 1

    def __iter__(self) -> Iterator[Block]:
        buf = self.buf
        offset = 0
        size = len(buf)
        while offset < size:
            found = parse(buf, offset)
            if isinstance(found, Damage):
                seq = found.seq if found.seq is not None else self.next_seq
                detail = found.problem.value
                if self.tail_allowed:
                    if later_valid_block(buf, offset, self.next_seq) is not None:
                        detail += "; intact records follow it, so it is not a torn tail"
                    elif looks_torn(buf, offset, found):
                        self.torn_at = offset
                        self.torn_reason = found.problem.value
                        return
                    else:
                        detail += (
                            "; the last block is complete, so this is damage, not a torn write"
                        )
                raise JournalCorruptError(self.segment, offset, seq, detail)
            if found.first_seq != self.next_seq:
                raise JournalCorruptError(
                    self.segment,
                    offset,
                    self.next_seq,
                    f"found seq {found.first_seq} where {self.next_seq} was expected "
                    "(sequence gap)",
                )
            if found.epoch < self.last_epoch:
                raise JournalCorruptError(
                    self.segment,
                    offset,
                    found.first_seq,
                    f"epoch {found.epoch} after epoch {self.last_epoch} (epochs never go back)",
                )
            self.last_epoch = found.epoch
            self.next_seq = found.last_seq + 1
            offset = found.end
            self.valid_end = offset
            yield found

    def run(self) -> Scanner:
        """Walk to the end without keeping blocks."""
        for _ in self:
            pass
        return self


def read_bytes(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read()
