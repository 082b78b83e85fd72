"""The one interface every journal backend implements (local files now, JetStream later).

Callers (the node, replay, rollback) only ever see this, so a replicated backend drops in by
implementing the same five operations with the same fencing rule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Journal(Protocol):
    """A sequenced log of opaque command payloads; sequence numbers start at 1, contiguous."""

    @property
    def last_seq(self) -> int:
        """Highest durable sequence number (0 when empty)."""
        ...

    @property
    def first_seq(self) -> int:
        """Lowest sequence number still readable (``last_seq + 1`` when empty)."""
        ...

    @property
    def epoch(self) -> int:
        """Term id; grows on rollback and leader change so older writers and snapshots are told
        apart from the current timeline."""
        ...

    def append(self, records: list[bytes], expected_last_seq: int) -> int:
        """Durably append ``records`` as ``expected_last_seq + 1 ...`` and return the new last
        seq, only if the journal's last seq is ``expected_last_seq``; otherwise raise
        ``FencedError`` and write nothing. Returns only after the backend's durability point
        (fdatasync locally, quorum ack when replicated)."""
        ...

    def read(self, from_seq: int, to_seq: int | None = None) -> Iterator[tuple[int, bytes]]:
        """Yield ``(seq, payload)`` for ``from_seq..to_seq`` (default: the last seq at call
        time), verifying checksums and continuity; damage raises ``JournalCorruptError``."""
        ...

    def term_at(self, seq: int) -> int:
        """Epoch under which record ``seq`` was written (0 for seq 0): ``(seq, term)`` names a
        position in exactly one timeline, which is how a snapshot proves it belongs to this log."""
        ...

    def close(self) -> None:
        """Release files and locks; idempotent."""
        ...


class Durable(Protocol):
    """What ``Committer.submit`` returns: a ``concurrent.futures.Future`` (JetStream's
    committer) or the local committer's lighter ``Completion``, resolved to the new last seq
    once the append is durable."""

    def done(self) -> bool: ...

    def exception(self, timeout: float | None = None) -> BaseException | None: ...

    def add_done_callback(self, fn: Callable[[Any], object]) -> None: ...


class Committer(Protocol):
    """Group commit in front of a journal: ``submit`` queues an append and returns its
    ``Durable`` outcome; ``close`` flushes and stops."""

    def submit(self, records: list[bytes], expected_last_seq: int) -> Durable: ...

    def close(self) -> None: ...
