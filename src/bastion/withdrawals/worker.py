"""The withdrawal worker: moves approved withdrawals to custody and custody's answers back
into the journal. It runs beside the leader node only (it reads the leader's engine and
journals through it); a standby never runs one.

Per asset, one lane, in withdrawal-id order:
1. **Claim** approved withdrawals, oldest first: journal them ``submitted`` (from then on a
   user can no longer cancel) *before* anything goes to custody.
2. **Send** claimed ones in id order with the key derived from the id. A refusal fails the
   withdrawal (funds released); no answer (down, timeout, 5xx, crash) leaves the outcome
   unknown, so the lane stops there and later asks again, always with *the same key*, after a
   back-off; the circuit breaker (per asset and connector) lets one probe through per
   cool-down.
3. **Reconcile / poll**: on every start, before sending anything, and then every
   ``poll_interval``, ask custody in one batched query what it has for every submitted
   withdrawal: confirmed and failed ones are journaled; ones it never got are sent again.
A lane whose asset is paused (operator, or automatically after ``outage_pause_s`` of
unreachable custody) submits nothing, but still polls what is already out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bastion.custody.client import CustodyClient, CustodyRejected, CustodyUnavailable
from bastion.withdrawals.book import (
    Book,
    Confirmed,
    Failed,
    Outcome,
    Paused,
    Queued,
    Released,
    Submitted,
    idempotency_key,
)
from bastion.withdrawals.breaker import Backoff, Breaker

log = logging.getLogger("bastion.withdrawals")


@dataclass
class Lane:
    asset: str
    breaker: Breaker
    reconciled: bool = False
    next_poll: float = 0.0
    sent_total: int = 0
    #: submitted withdrawals this run knows custody has not got yet (sent without a query)
    claimed: set[int] = field(default_factory=set)


@dataclass
class WorkerConfig:
    batch: int = 64  # submits per lane per round, journaled together
    #: custody calls in flight per lane: 1 sends strictly in id order; more overlaps the
    #: round trips (custody may then accept neighbours within a window out of order)
    window: int = 1
    idle_sleep: float = 0.02
    poll_interval: float = 0.25  # confirmation polling of submitted withdrawals
    outage_pause_s: float = 300.0  # dYdX v4: a chain outage of 5 min pauses withdrawals
    breaker_threshold: int = 3
    backoff_base: float = 0.1
    backoff_cap: float = 5.0
    venue: str = "bastion"


@dataclass
class WithdrawalWorker:
    book: Book
    client: CustodyClient
    config: WorkerConfig = field(default_factory=WorkerConfig)
    clock: Callable[[], float] = time.monotonic
    wall_ms: Callable[[], int] = field(default=lambda: time.time_ns() // 1_000_000)
    lanes: dict[str, Lane] = field(default_factory=dict)

    def lane(self, asset: str) -> Lane:
        lane = self.lanes.get(asset)
        if lane is None:
            c = self.config
            lane = self.lanes[asset] = Lane(asset, Breaker(
                threshold=c.breaker_threshold, backoff=Backoff(c.backoff_base, c.backoff_cap)))
        return lane

    def key(self, wid: int) -> str:
        return idempotency_key(wid, self.config.venue)

    async def run(self) -> None:
        """Forever (cancel to stop): reconcile each lane first, then poll and submit."""
        while True:
            busy = False
            for asset in self.book.assets():
                try:
                    busy |= await self.step(self.lane(asset))
                except asyncio.CancelledError:
                    raise
                except Exception:  # a defect in one lane must not stop the others
                    log.exception("withdrawal lane %s failed; retrying", asset)
            await asyncio.sleep(0 if busy else self.config.idle_sleep)

    async def step(self, lane: Lane) -> bool:
        """One round of one lane; True if it did work (so the loop does not sleep)."""
        due = self.book.due(lane.asset, self.wall_ms())
        if due:
            await self.book.record([Released(wid) for wid in due])
        queue = self.book.queue(lane.asset)
        now = self.clock()
        if not queue or not lane.breaker.allow(now):
            await self._maybe_pause(lane, queue, now)
            return False
        submitted = [w for w in queue if w.state == "submitted"]
        out = [w for w in submitted if w.wid not in lane.claimed]
        if not out:
            lane.reconciled = True  # nothing custody could already have
        elif (not lane.reconciled or now >= lane.next_poll):
            lane.next_poll = now + self.config.poll_interval
            if not await self._query(lane, out):
                return False
            if not lane.reconciled:
                lane.reconciled = True
                log.info("withdrawals %s reconciled: %d submitted, %d queued", lane.asset,
                         len(out), len(queue))
        to_send = [w for w in submitted if w.wid in lane.claimed][: self.config.batch]
        if to_send:
            return await self._send(lane, to_send)
        if not lane.reconciled or self.book.paused(lane.asset):
            return False
        approved = [w for w in queue if w.state == "approved"][: self.config.batch]
        if not approved:
            return False
        # the claim is journaled before anything goes out: from here a user can no longer
        # cancel, so a withdrawal can never be both refunded and sent
        await self.book.record([Submitted(w.wid, self.key(w.wid)) for w in approved])
        lane.claimed.update(w.wid for w in approved)
        return True

    async def _query(self, lane: Lane, queued: list[Queued]) -> bool:
        """Ask custody about submitted withdrawals; journal what is final; those custody has
        never seen are claimed again to be sent (same key). False if custody did not answer."""
        keys = {self.key(w.wid): w for w in queued}
        try:
            known = await self.client.query(lane.asset, list(keys))
        except CustodyUnavailable as exc:
            self._failed_call(lane, exc)
            return False
        except CustodyRejected as exc:
            log.error("custody refused a status query for %s: %s", lane.asset, exc)
            return False
        lane.breaker.success()
        outcomes: list[Outcome] = []
        for key, w in keys.items():
            status = known.get(key)
            if status is None:
                lane.claimed.add(w.wid)
            elif status.status == "confirmed":
                outcomes.append(Confirmed(w.wid, status.txid))
            elif status.status == "failed":
                outcomes.append(Failed(w.wid, f"custody: {status.reason or 'failed on chain'}"))
        if outcomes:
            await self.book.record(outcomes)
        return True

    async def _send(self, lane: Lane, claimed: list[Queued]) -> bool:
        """Send claimed withdrawals in id order, ``window`` at a time (1: strictly one after
        the other); stop after the first group in which one got no answer."""
        outcomes: list[Outcome] = []
        window = max(1, self.config.window)
        for i in range(0, len(claimed), window):
            group = claimed[i:i + window]
            results = await asyncio.gather(*(self._send_one(w) for w in group),
                                           return_exceptions=True)
            unavailable: BaseException | None = None
            for w, result in zip(group, results, strict=True):
                if isinstance(result, CustodyUnavailable):
                    unavailable = result
                    continue
                if isinstance(result, BaseException):
                    raise result
                lane.claimed.discard(w.wid)
                lane.breaker.success()  # custody answered
                if result is not None:
                    outcomes.append(result)
                if not isinstance(result, Failed):
                    lane.sent_total += 1
            if unavailable is not None:
                self._failed_call(lane, unavailable)
                break
        if outcomes:
            await self.book.record(outcomes)
        return True

    async def _send_one(self, w: Queued) -> Outcome | None:
        """One custody call: Failed on a refusal, Confirmed if custody says so at once."""
        try:
            status = await self.client.submit(self.key(w.wid), str(w.wid), w.asset, w.address,
                                              w.amount)
        except CustodyRejected as exc:
            return Failed(w.wid, f"custody refused: {exc}")
        return Confirmed(w.wid, status.txid) if status.status == "confirmed" else None

    def _failed_call(self, lane: Lane, exc: BaseException) -> None:
        lane.breaker.failure(self.clock())
        b = lane.breaker
        log.warning("custody unavailable for %s (failure %d, breaker %s, retry in %.2f s): %s",
                    lane.asset, b.failures, b.state, b.wait(self.clock()), exc)

    async def _maybe_pause(self, lane: Lane, queue: list[Queued], now: float) -> None:
        """After a long outage, pause the asset until an operator resumes it (journaled)."""
        since = lane.breaker.down_since
        if since is None or not queue or now - since < self.config.outage_pause_s:
            return
        if not self.book.paused(lane.asset):
            await self.book.record([Paused(lane.asset, f"custody unreachable for "
                                                       f"{int(now - since)} s")])

    def lane_view(self, asset: str) -> dict[str, object]:
        """Breaker state for status and the operator queue view."""
        lane = self.lanes.get(asset)
        if lane is None:
            return {"breaker": "closed", "down_for_s": 0.0, "reconciled": False}
        down = lane.breaker.down_since
        return {"breaker": lane.breaker.state, "reconciled": lane.reconciled,
                "down_for_s": 0.0 if down is None else round(self.clock() - down, 3),
                "failures": lane.breaker.failures, "sent_total": lane.sent_total}


def _dedupe(outcomes: list[Outcome]) -> list[Outcome]:
    """A duplicated delivery from custody must not become two commands for one withdrawal."""
    seen: set[Outcome] = set()
    out: list[Outcome] = []
    for o in outcomes:
        if o not in seen:
            seen.add(o)
            out.append(o)
    return out
