"""The deposit watcher: reads the chain (through custody) and journals what it sees for
addresses the venue issued. The core moves a deposit ``detected -> confirming (n/N) ->
credited`` and credits it exactly once, keyed by its transaction id, so a deposit listed
twice (``duplicate_delivery``) or seen again after a restart is harmless; the watcher only
saves journal writes by skipping what the engine already knows."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from bastion.custody.client import CustodyClient, CustodyRejected, CustodyUnavailable
from bastion.withdrawals.book import Book, DepositSeen, Outcome

log = logging.getLogger("bastion.deposits")


@dataclass
class DepositWatcher:
    book: Book
    client: CustodyClient
    interval: float = 0.5
    #: after rounds with nothing in flight (no deposit short of credited, nothing new) the
    #: pause doubles up to this: an idle venue asks custody a few times less often (each round
    #: is an HTTP call per asset on the event loop), a new deposit is seen within this long
    idle_interval: float = 2.0
    #: per asset: the lowest height still worth listing (deposits below it are credited)
    floors: dict[str, int] = field(default_factory=dict)
    #: assets whose last look found a deposit not yet credited (or could not look)
    in_flight: set[str] = field(default_factory=set)

    async def run(self) -> None:
        pause = self.interval
        while True:
            for asset in self.book.assets():
                try:
                    await self.poll(asset)
                except (CustodyUnavailable, CustodyRejected) as exc:
                    self.in_flight.add(asset)
                    log.warning("deposits of %s not readable: %s", asset, exc)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    self.in_flight.add(asset)
                    log.exception("deposit watcher for %s failed; retrying", asset)
            pause = self.interval if self.in_flight else min(pause * 2, self.idle_interval)
            await asyncio.sleep(pause)

    async def poll(self, asset: str) -> int:
        """One look at the chain for `asset`; returns how many observations were journaled."""
        deposits, height = await self.client.deposits(asset, self.floors.get(asset, 0))
        outcomes: list[Outcome] = []
        seen: set[str] = set()
        floor = height
        pending = False
        for d in deposits:
            if d.txid in seen or not self.book.knows_address(asset, d.address):
                continue
            seen.add(d.txid)
            progress = self.book.deposit_progress(d.txid)
            if progress is not None and progress[1]:
                continue  # credited
            pending = True
            floor = min(floor, height - d.confirmations)
            if progress is not None and progress[0] >= d.confirmations:
                continue  # nothing new
            outcomes.append(DepositSeen(d.txid, asset, d.address, d.amount, d.confirmations))
        self.floors[asset] = max(0, floor - 1)
        if pending:
            self.in_flight.add(asset)
        else:
            self.in_flight.discard(asset)
        if outcomes:
            await self.book.record(outcomes)
        return len(outcomes)
