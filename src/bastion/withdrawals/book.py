"""What the withdrawal worker and deposit watcher need from the node, and what they hand back.

The worker reads the journaled queue and reports outcomes; it never changes state itself.
Each outcome becomes a journaled core command, and the core refuses a transition that is not
allowed (a second confirmation, a confirmation of a cancelled withdrawal, ...). So a worker
that crashed, restarted or raced itself can repeat an outcome harmlessly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


def idempotency_key(wid: int, venue: str = "bastion") -> str:
    """The custody idempotency key of withdrawal `wid`: the same on every retry, on every
    worker and after every restart, so custody can never see one withdrawal as two."""
    return f"{venue}-w{wid}"


@dataclass(frozen=True)
class Queued:
    """An approved or submitted withdrawal, as the worker sees it."""

    wid: int
    asset: str
    address: str
    amount: int  # what leaves the venue (the fee stays)
    state: str  # approved | submitted
    requested_ms: int


@dataclass(frozen=True)
class Submitted:
    """Claimed for sending: journaled before the custody call, so cancel is closed."""

    wid: int
    key: str


@dataclass(frozen=True)
class Released:
    """A withdrawal whose new address's delay has passed becomes approved."""

    wid: int


@dataclass(frozen=True)
class Confirmed:
    wid: int
    txid: str


@dataclass(frozen=True)
class Failed:
    wid: int
    reason: str


@dataclass(frozen=True)
class Paused:
    asset: str
    reason: str


@dataclass(frozen=True)
class DepositSeen:
    txid: str
    asset: str
    address: str
    amount: int
    confirmations: int


Outcome = Submitted | Released | Confirmed | Failed | Paused | DepositSeen


class Book(Protocol):
    """The node side (``nodebook.NodeBook`` over a running node)."""

    def queue(self, asset: str) -> list[Queued]:
        """Approved and submitted withdrawals of `asset`, oldest (lowest id) first."""
        ...

    def due(self, asset: str, now_ms: int) -> list[int]:
        """Ids of withdrawals waiting for an address delay that has passed by `now_ms`."""
        ...

    def assets(self) -> list[str]:
        """Assets with withdrawals enabled in the engine."""
        ...

    def paused(self, asset: str) -> bool: ...

    def deposit_progress(self, txid: str) -> tuple[int, bool] | None:
        """(confirmations recorded, credited) of a known deposit, None if unseen."""
        ...

    def knows_address(self, asset: str, address: str) -> bool: ...

    async def record(self, outcomes: list[Outcome]) -> None:
        """Journal the outcomes (one batch, one durable write)."""
        ...
