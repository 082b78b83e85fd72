"""Each use case of the gateway (``Gateway``) takes parsed integers and returns a typed outcome:
the command's events plus the state it left. Run on a real node (journal on disk, fsync) with
the read model following it, as the server runs them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bastion.api.errors import ApiError
from bastion.api.service.gateway import Gateway
from bastion.core import commands as C
from bastion.core import errors as X
from bastion.core import events as E
from bastion.demo import BTC_USDT, BTC_USDT_PERP, demo_perp_setup, demo_setup
from bastion.node import Node, NodeConfig

PX = 4_000_000  # 40,000.00 USDT
LOT = 1_000  # 0.00001 BTC


def _order(cid: str = "", qty: int = 10 * LOT) -> C.PlaceOrder:
    return C.PlaceOrder(account=1, market=BTC_USDT, side="buy", qty=qty, price=PX,
                        order_type="limit", tif="GTC", client_id=cid)


async def _scenario(directory: Path) -> None:
    node = Node(directory, config=NodeConfig(snapshot_every_commands=0,
                                             snapshot_every_seconds=0, progress=False))
    await node.start()
    gw = Gateway(node)
    gw.attach()
    try:
        await node.submit_many(demo_setup() + demo_perp_setup())
        await node.submit(C.SetWithdrawalRules(asset="USDT", min_amount=100, reason="t"))

        placed = await gw.place(_order("a"))
        oid = placed.order.order_id
        assert not placed.duplicate and [type(e) for e in placed.events] == [E.OrderAccepted]

        amended = await gw.amend(1, oid, None, None, 5 * LOT)
        (ev,) = [e for e in amended.events if type(e) is E.OrderAmended]
        assert (ev.order_id, ev.qty) == (oid, 5 * LOT)
        assert amended.order.order_id == oid and amended.order.qty == 5 * LOT

        canceled = await gw.cancel(1, client_id="a")
        assert [(type(e), e.order_id) for e in canceled.events
                if type(e) is E.OrderCanceled] == [(E.OrderCanceled, oid)]
        assert canceled.order.status == "canceled" and not canceled.order.is_open
        with pytest.raises(ApiError) as gone:
            await gw.cancel(1, order_id=oid)
        assert gone.value.code == X.UNKNOWN_ORDER

        # one client id placed three times at once: one order, two duplicates of it (the
        # second and third wait for the first; none reaches the journal a second time)
        seq = gw.engine.seq
        trio = await asyncio.gather(*(gw.place(_order("same")) for _ in range(3)))
        assert gw.engine.seq == seq + 1
        assert [p.duplicate for p in trio] == [False, True, True]
        assert len({p.order.order_id for p in trio}) == 1 and not gw._inflight
        # a refused first attempt lets the next one with that id through
        refused, retried = await asyncio.gather(gw.place(_order("again", qty=1)),
                                                gw.place(_order("again")),
                                                return_exceptions=True)
        assert isinstance(refused, ApiError) and refused.code == X.LOT_SIZE, refused
        assert not isinstance(retried, BaseException) and not retried.duplicate
        await gw.cancel_all(1, BTC_USDT)

        ids = [(await gw.place(_order())).order.order_id for _ in range(3)]
        every = await gw.cancel_all(1, BTC_USDT)
        assert [r.order_id for r in every.orders] == ids
        assert [e.order_id for e in every.events if type(e) is E.OrderCanceled] == ids
        assert all(r.status == "canceled" for r in every.orders)
        assert (await gw.cancel_all(1, BTC_USDT)) == ([], [])

        before = node.engine.perp.margins[(1, "USDT")].collateral
        moved = await gw.transfer_margin(1, "USDT", 12_345, add=True)
        (tr,) = moved.events
        assert type(tr) is E.MarginTransferred and tr.delta == 12_345
        assert moved.margin is not None and moved.margin.collateral == before + 12_345
        back = await gw.transfer_margin(1, "USDT", 345, add=False)
        assert back.margin is not None and back.margin.collateral == before + 12_000

        lev = await gw.set_leverage(1, BTC_USDT_PERP, 7)
        assert lev.leverage == 7 and lev.asset == "USDT"
        assert [(type(e), e.leverage) for e in lev.events] == [(E.LeverageChanged, 7)]
        assert lev.margin is not None and lev.margin.leverage[BTC_USDT_PERP] == 7
        with pytest.raises(ApiError) as same:
            await gw.set_leverage(1, BTC_USDT_PERP, 7)
        assert same.value.code == X.NO_CHANGE
        again = await gw.set_leverage(1, BTC_USDT_PERP, 7, same_is_ok=True)
        assert (again.leverage, again.events) == (7, [])
        with pytest.raises(ApiError) as spot:
            await gw.set_leverage(1, BTC_USDT, 5)
        assert spot.value.code == X.NOT_PERP

        w = await gw.withdraw(1, "USDT", 5_000, "0x" + "ab" * 20, "w1")
        assert not w.duplicate and w.withdrawal.amount == 5_000
        assert [e.wid for e in w.events if type(e) is E.WithdrawalUpdated] \
            == [w.withdrawal.wid]
        seq = node.engine.seq
        repeat = await gw.withdraw(1, "USDT", 5_000, "0x" + "ab" * 20, "w1")
        assert repeat.duplicate and repeat.events == []
        assert repeat.withdrawal.wid == w.withdrawal.wid and node.engine.seq == seq
    finally:
        await node.close()
        gw.detach()


def test_use_cases_return_their_events_and_resulting_state(tmp_path: Path) -> None:
    asyncio.run(_scenario(tmp_path / "node"))
