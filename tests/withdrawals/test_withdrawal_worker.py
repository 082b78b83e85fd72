"""The withdrawal worker against the real simulator process, with an in-memory stand-in for
the node that enforces the journal's transition rules (the end-to-end tests with a real node
are in test_withdrawals_e2e.py). Checks ordering, idempotency across worker restarts in every
fault mode, reconciliation before sending, and the pause after a long outage."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from bastion.custody.client import CustodyClient
from bastion.withdrawals.book import (
    Confirmed,
    DepositSeen,
    Failed,
    Outcome,
    Paused,
    Queued,
    Submitted,
)
from bastion.withdrawals.worker import WithdrawalWorker, WorkerConfig
from custody_support import Sim

ADDR = "0x" + "12" * 20


@dataclass
class MemoryBook:
    """Withdrawal states as the core keeps them; an illegal transition is an error here."""

    items: dict[int, Queued] = field(default_factory=dict)
    final: dict[int, str] = field(default_factory=dict)
    paused_assets: set[str] = field(default_factory=set)
    log: list[Outcome] = field(default_factory=list)

    def add(self, wid: int, asset: str = "ETH", address: str = ADDR) -> None:
        self.items[wid] = Queued(wid, asset, address, 100 + wid, "approved", 0)

    def queue(self, asset: str) -> list[Queued]:
        return sorted((w for w in self.items.values() if w.asset == asset),
                      key=lambda w: w.wid)

    def due(self, asset: str, now_ms: int) -> list[int]:
        return []

    def assets(self) -> list[str]:
        return ["ETH", "BTC"]

    def paused(self, asset: str) -> bool:
        return asset in self.paused_assets

    def deposit_progress(self, txid: str) -> tuple[int, bool] | None:
        return None

    def knows_address(self, asset: str, address: str) -> bool:
        return False

    async def record(self, outcomes: list[Outcome]) -> None:
        for o in outcomes:
            self.log.append(o)
            if isinstance(o, Submitted):
                w = self.items[o.wid]
                assert w.state == "approved", f"submitted twice: {o}"
                self.items[o.wid] = Queued(w.wid, w.asset, w.address, w.amount, "submitted", 0)
            elif isinstance(o, Confirmed | Failed):
                assert o.wid not in self.final, f"finished twice: {o}"
                assert self.items.pop(o.wid).state == "submitted"
                self.final[o.wid] = "confirmed" if isinstance(o, Confirmed) else "failed"
            elif isinstance(o, Paused):
                self.paused_assets.add(o.asset)
            else:
                assert not isinstance(o, DepositSeen)


@pytest.fixture
def sim(tmp_path) -> Iterator[Sim]:  # type: ignore[no-untyped-def]
    s = Sim(tmp_path / "sim", block_ms=50).start()
    yield s
    s.stop()


def _config(**kw: float) -> WorkerConfig:
    base = dict(poll_interval=0.05, backoff_base=0.05, backoff_cap=0.4, idle_sleep=0.01)
    base.update(kw)
    return WorkerConfig(**base)  # type: ignore[arg-type]


async def _drive(book: MemoryBook, sim: Sim, until: float, config: WorkerConfig,
                 timeout: float = 1.0) -> WithdrawalWorker:
    """Run a worker (fresh lanes, as after a restart) until `until` s or the queue is empty."""
    client = CustodyClient(sim.url, timeout=timeout)
    worker = WithdrawalWorker(book, client, config)
    task = asyncio.create_task(worker.run())
    loop = asyncio.get_running_loop()
    end = loop.time() + until
    while loop.time() < end and book.items:
        await asyncio.sleep(0.02)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await client.close()
    return worker


def test_drains_in_order_through_every_fault_with_restarts(sim: Sim) -> None:
    book = MemoryBook()
    for wid in range(1, 81):
        book.add(wid)
    modes = ["crash_after_accept", "duplicate_delivery", "down", "slow", "ok"]

    async def go() -> None:
        for i, mode in enumerate(modes * 2):
            sim.fault(mode, "ETH", delay_ms=700)
            await _drive(book, sim, 0.8, _config(), timeout=0.4)  # then "killed" mid-way
            if i == len(modes) - 1:
                sim.fault("ok")
        sim.fault("ok")
        await _drive(book, sim, 20, _config())

    asyncio.run(go())
    assert not book.items and set(book.final) == set(range(1, 81))
    assert set(book.final.values()) == {"confirmed"}
    ledger = sim.ledger()
    assert ledger["double_sends"] == {}
    sends = sorted(ledger["withdrawals"], key=lambda w: (w["height"], w["accepted_ms"]))
    refs = [int(w["reference"]) for w in sends]
    assert sorted(refs) == list(range(1, 81)) and refs == sorted(refs)  # custody saw them in order


def test_reconciles_before_sending_and_refusals_fail(sim: Sim) -> None:
    book = MemoryBook()
    book.add(1)
    book.add(2, address="0x" + "ee" * 20)
    book.add(3)
    sim.http.post("/blocked", json={"address": "0x" + "ee" * 20})
    # wid 1 was sent by a previous worker that died before journaling anything but the claim
    book.items[1] = Queued(1, "ETH", ADDR, 101, "submitted", 0)

    async def go() -> None:
        c = CustodyClient(sim.url)
        await c.submit("bastion-w1", "1", "ETH", ADDR, 101)
        await c.close()
        await _drive(book, sim, 10, _config())

    asyncio.run(go())
    assert book.final == {1: "confirmed", 2: "failed", 3: "confirmed"}
    assert sim.ledger()["replays"] == 0  # wid 1 was found by the query, never resent


def test_paused_asset_sends_nothing_and_long_outage_pauses(sim: Sim) -> None:
    book = MemoryBook()
    book.add(1)
    book.paused_assets.add("ETH")

    async def go() -> None:
        await _drive(book, sim, 0.5, _config())
        assert book.items[1].state == "approved" and sim.ledger()["sends"] == 0
        book.paused_assets.clear()
        sim.fault("down", "ETH")
        worker = await _drive(book, sim, 1.5, _config(outage_pause_s=0.5))
        assert "ETH" in book.paused_assets
        assert worker.lane_view("ETH")["breaker"] in ("open", "half_open")

    asyncio.run(go())
    assert any(isinstance(o, Paused) and "unreachable" in o.reason for o in book.log)
