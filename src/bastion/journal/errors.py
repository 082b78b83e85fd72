"""Durability errors: every failure carries a stable ``code`` for machines and a one-line message
for operators, so the CLI and the node can refuse cleanly instead of crashing with a traceback."""

from __future__ import annotations


class DurabilityError(Exception):
    """Base of journal, snapshot, node and rollback failures."""

    code: str = "DURABILITY_ERROR"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class FencedError(DurabilityError):
    """An append did not extend the sequence the writer last saw: a stale or deposed writer."""

    code = "FENCED"

    def __init__(self, expected_last_seq: int, actual_last_seq: int, detail: str = "") -> None:
        suffix = f" ({detail})" if detail else ""
        super().__init__(
            f"append expected last seq {expected_last_seq} but the journal is at "
            f"{actual_last_seq}; this writer is stale and nothing was written{suffix}"
        )
        self.expected_last_seq = expected_last_seq
        self.actual_last_seq = actual_last_seq


class JournalCorruptError(DurabilityError):
    """Damage that is not a torn tail: refusing is the only way to never lose acknowledged data."""

    code = "JOURNAL_CORRUPT"

    def __init__(self, segment: str, offset: int, seq: int, reason: str) -> None:
        super().__init__(f"segment {segment} offset {offset} seq {seq}: {reason}")
        self.segment = segment
        self.offset = offset
        self.seq = seq
        self.reason = reason


class JournalIOError(DurabilityError):
    """A write or fsync failed; after that the journal refuses writes (a retried fsync can lie)."""

    code = "JOURNAL_IO"


class JournalClosedError(DurabilityError):
    code = "JOURNAL_CLOSED"
