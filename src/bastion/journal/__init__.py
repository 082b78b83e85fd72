"""Command journal: the durable, sequenced, fenced log every shard's state is replayed from."""

from bastion.journal.base import Journal
from bastion.journal.errors import (
    DurabilityError,
    FencedError,
    JournalClosedError,
    JournalCorruptError,
    JournalIOError,
)
from bastion.journal.group import GroupCommitter
from bastion.journal.local import LocalJournal

__all__ = [
    "DurabilityError",
    "FencedError",
    "GroupCommitter",
    "Journal",
    "JournalClosedError",
    "JournalCorruptError",
    "JournalIOError",
    "LocalJournal",
]
