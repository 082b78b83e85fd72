"""The custody simulator (a real process) and the custody client: idempotent sends, every
fault mode, the durable ledger across a simulated crash, deposits, and the breaker timing."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator

import pytest

from bastion.custody.addresses import address_problem, derive_address
from bastion.custody.client import CustodyClient, CustodyRejected, CustodyUnavailable
from bastion.withdrawals.breaker import Backoff, Breaker
from custody_support import Sim

ETH_ADDR = "0x" + "ab" * 20


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    s = Sim(tmp_path_factory.mktemp("sim") / "data", block_ms=100).start()
    yield s
    s.stop()


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


async def _with_client(sim: Sim, fn, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    client = CustodyClient(sim.url, timeout=timeout)
    try:
        return await fn(client)
    finally:
        await client.close()


def test_same_key_is_one_send_and_other_terms_are_refused(sim: Sim) -> None:
    async def go(c: CustodyClient) -> None:
        a = await c.submit("k-idem", "1", "ETH", ETH_ADDR, 500)
        b = await c.submit("k-idem", "1", "ETH", ETH_ADDR, 500)
        # the same send both times; a block (100 ms here) may confirm it in between on a
        # loaded machine, so the status is pending or confirmed, never a second send
        assert a.txid == b.txid and {a.status, b.status} <= {"pending", "confirmed"}
        with pytest.raises(CustodyRejected) as err:
            await c.submit("k-idem", "1", "ETH", ETH_ADDR, 501)
        assert err.value.code == "KEY_REUSED"
        with pytest.raises(CustodyRejected) as bad:
            await c.submit("k-bad", "2", "ETH", "bc1qnotaneth", 5)
        assert bad.value.code == "INVALID_ADDRESS"
        assert await c.status("never-sent", "ETH") is None
    run(_with_client(sim, go))
    sends = [w for w in sim.ledger()["withdrawals"] if w["key"] == "k-idem"]
    assert len(sends) == 1


def test_confirms_after_a_block_and_blocked_addresses_fail(sim: Sim) -> None:
    blocked = "0x" + "cd" * 20
    assert sim.http.post("/blocked", json={"address": blocked}).status_code == 200

    async def go(c: CustodyClient) -> None:
        await c.submit("k-conf", "3", "ETH", ETH_ADDR, 7)
        await c.submit("k-fail", "4", "ETH", blocked, 7)
        await asyncio.sleep(0.35)
        got = await c.query("ETH", ["k-conf", "k-fail", "k-none"])
        assert got["k-conf"].status == "confirmed" and got["k-conf"].confirmations >= 1
        assert got["k-fail"].status == "failed" and "blocked" in got["k-fail"].reason
        assert "k-none" not in got
    run(_with_client(sim, go))


def test_down_and_slow_give_unknown_outcomes(sim: Sim) -> None:
    async def go(c: CustodyClient) -> None:
        sim.fault("down", "ETH")
        with pytest.raises(CustodyUnavailable):
            await c.submit("k-down", "5", "ETH", ETH_ADDR, 9)
        assert (await c.submit("k-btc", "6", "BTC", derive_address("BTC", "x"), 9)).key
        sim.fault("slow", "ETH", delay_ms=1500)
        impatient = CustodyClient(sim.url, timeout=0.5)
        try:
            with pytest.raises(CustodyUnavailable):  # timed out: but custody did accept it
                await impatient.submit("k-slow", "7", "ETH", ETH_ADDR, 9)
        finally:
            await impatient.close()
        sim.fault("ok", None)
        assert await c.status("k-down", "ETH") is None
        deadline = asyncio.get_running_loop().time() + 15
        while (got := await c.status("k-slow", "ETH")) is None:
            assert asyncio.get_running_loop().time() < deadline, "the slow send never landed"
            await asyncio.sleep(0.2)
        assert got.key == "k-slow"
    run(_with_client(sim, go))


def test_crash_after_accept_keeps_the_send_and_restarts(sim: Sim) -> None:
    async def go(c: CustodyClient) -> None:
        sim.fault("crash_after_accept", "ETH")
        with pytest.raises(CustodyUnavailable):
            await c.submit("k-crash", "8", "ETH", ETH_ADDR, 11)
        sim.wait_up()
        assert sim.http.get("/faults").json()["ETH"]["mode"] == "crash_after_accept"
        sim.fault("ok")
        got = await c.status("k-crash", "ETH")
        assert got is not None  # accepted durably before the crash
        again = await c.submit("k-crash", "8", "ETH", ETH_ADDR, 11)
        assert again.txid == got.txid
    run(_with_client(sim, go))
    ledger = sim.ledger()
    assert ledger["double_sends"] == {}
    assert [w["key"] for w in ledger["withdrawals"]].count("k-crash") == 1


def test_deposits_and_duplicate_delivery(sim: Sim) -> None:
    async def go(c: CustodyClient) -> None:
        addr = await c.new_address("BTC", "acct-7")
        assert addr == await c.new_address("BTC", "acct-7") and not address_problem("BTC", addr)
        r = sim.http.post("/v1/deposits", json={"asset": "BTC", "address": addr,
                                                "amount": 12345})
        assert r.status_code == 200, r.text
        txid = r.json()["txid"]
        assert sim.http.post("/v1/deposits", json={"asset": "BTC", "address": ETH_ADDR,
                                                   "amount": 1}).status_code == 400
        sim.fault("duplicate_delivery", "BTC")
        deps, height = await c.deposits("BTC")
        assert [d.txid for d in deps].count(txid) == 2 and height >= 0
        sim.fault("duplicate_delivery", "ETH")
        await c.submit("k-dup", "9", "ETH", ETH_ADDR, 3)
        sim.fault("ok")
        await asyncio.sleep(0.25)
        deps, _ = await c.deposits("BTC")
        mine = [d for d in deps if d.txid == txid]
        assert len(mine) == 1 and mine[0].label == "acct-7" and mine[0].confirmations >= 1
    run(_with_client(sim, go))
    ledger = sim.ledger()
    assert ledger["replays"] >= 1 and ledger["double_sends"] == {}


def test_bad_fault_requests_are_refused(sim: Sim) -> None:
    for body in ({"mode": "explode"}, {"mode": "slow", "delay_ms": -1}, [1, 2], "x"):
        r = sim.http.post("/faults", json=body)
        assert r.status_code == 400 and r.json()["code"] == "MALFORMED"
    assert sim.http.post("/v1/withdrawals", content=b"{nope").status_code == 400


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    b = Backoff(base=0.1, cap=2.0, rng=random.Random(1))
    delays = [[b.delay(n) for _ in range(200)] for n in range(8)]
    for n, ds in enumerate(delays):
        ceiling = min(2.0, 0.1 * 2**n)
        assert all(ceiling / 2 <= d <= ceiling for d in ds)
        assert max(ds) - min(ds) > ceiling / 10  # jittered, not constant


def test_breaker_opens_probes_and_closes() -> None:
    br = Breaker(threshold=3, backoff=Backoff(base=1.0, cap=8.0, rng=random.Random(2)))
    now = 100.0
    for i in range(3):
        assert br.state == "closed" and br.allow(now)
        br.failure(now)
        assert not br.allow(now)  # backed off even before the breaker opens
        if i < 2:
            now = br.retry_at
    assert br.state == "open" and br.down_since == 100.0 and not br.allow(now + 0.1)
    now = br.retry_at
    assert br.allow(now) and br.state == "half_open"
    br.failure(now)
    assert br.state == "open" and br.retry_at > now
    assert br.allow(br.retry_at)
    br.success()
    assert br.state == "closed" and br.down_since is None and br.allow(br.retry_at)


def test_address_formats_per_asset() -> None:
    good = {"BTC": ["bc1q" + "q" * 38, "1" + "A" * 30, derive_address("BTC", "1")],
            "ETH": [ETH_ADDR], "USDT": ["0x" + "0F" * 20]}
    bad = {"BTC": ["", "bc1", "bc1q" + "b" * 38, "2" + "A" * 30, "bc1q" + "q" * 38 + "é"],
           "ETH": ["0x" + "g" * 40, "ab" * 21, "0x" + "a" * 39, "0x" + "٣" * 40],
           "USDT": ["bc1q" + "q" * 38]}
    for asset, addrs in good.items():
        assert all(address_problem(asset, a) == "" for a in addrs)
    for asset, addrs in bad.items():
        for a in addrs:
            assert address_problem(asset, a) != "", (asset, a)
    assert "required" in address_problem("BTC", None)
