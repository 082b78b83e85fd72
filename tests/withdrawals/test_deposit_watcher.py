"""The deposit watcher against the real custody simulator: it asks less often while nothing is
in flight, and follows a deposit on every round until it is credited."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import pytest

from bastion.custody.client import ChainDeposit, CustodyClient
from bastion.withdrawals.book import DepositSeen, Outcome
from bastion.withdrawals.deposits import DepositWatcher
from custody_support import Sim


class _Book:
    """Deposit progress as the core keeps it, for one address the venue issued."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.progress: dict[str, tuple[int, bool]] = {}

    def assets(self) -> list[str]:
        return ["ETH", "BTC"]

    def knows_address(self, asset: str, address: str) -> bool:
        return address == self.address

    def deposit_progress(self, txid: str) -> tuple[int, bool] | None:
        return self.progress.get(txid)

    async def record(self, outcomes: list[Outcome]) -> None:
        for o in outcomes:
            assert isinstance(o, DepositSeen)
            self.progress[o.txid] = (o.confirmations, False)


class _Counting(CustodyClient):
    calls = 0

    async def deposits(self, asset: str, since_height: int = 0) -> tuple[list[ChainDeposit], int]:
        self.calls += 1
        return await super().deposits(asset, since_height)


@pytest.fixture
def sim(tmp_path) -> Iterator[Sim]:  # type: ignore[no-untyped-def]
    s = Sim(tmp_path / "sim", block_ms=50).start()
    yield s
    s.stop()


async def _until(pred: object, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():  # type: ignore[operator]
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_the_watcher_backs_off_while_idle_and_follows_a_deposit_until_credited(sim: Sim) -> None:
    async def main() -> None:
        client = _Counting(sim.url)
        address = await client.new_address("ETH", "watcher-test")
        book = _Book(address)
        watcher = DepositWatcher(book, client, interval=0.05, idle_interval=0.4)  # type: ignore[arg-type]
        task = asyncio.create_task(watcher.run())
        try:
            await asyncio.sleep(2.0)
            # every 0.05 s would be ~80 calls (2 assets); doubling to 0.4 s makes about 14
            assert 2 <= client.calls <= 24, client.calls
            assert not watcher.in_flight
            minted = await asyncio.to_thread(
                sim.http.post, "/v1/deposits",
                json={"asset": "ETH", "address": address, "amount": 5})
            txid = minted.json()["txid"]
            await _until(lambda: txid in book.progress)  # seen within the idle pause
            assert watcher.in_flight == {"ETH"}  # uncredited: looked at every round again
            book.progress[txid] = (book.progress[txid][0], True)  # the core credited it
            await _until(lambda: not watcher.in_flight)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await client.close()

    asyncio.run(main())
