"""``/metrics``: parses as Prometheus text, and every series moves with the state it reports."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from serverproc import Admin, Client, Server, running

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # a small per-key limit so the test can meet it; the feeder off so only the test trades
    with running(tmp_path_factory.mktemp("metrics") / "data", BASTION_RATE_KEY="20/20",
                 BASTION_FEEDER_INTERVAL="0") as s:
        yield s


def scrape(c: Client) -> Samples:
    r = c.http.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_follow_state(srv: Server) -> None:
    alice = Client(srv.url)
    admin = Admin(srv.url)
    try:
        before = scrape(alice)
        assert value(before, "bastion_node_role", role="embedded") == 1
        assert value(before, "bastion_node_up") == 1
        assert value(before, "bastion_market_mode", market="BTC-USDT", mode="open") == 1
        placed = 0
        for i in range(6):  # resting bids far below the market
            r = alice.place(market="BTC-USDT", side="buy", quantity="0.01", price=f"{100 + i}")
            assert r.status_code == 201, r.text
            placed += 1
        after = scrape(alice)
        assert value(after, "bastion_commands_total", type="PlaceOrder", outcome="accepted") \
            - value(before, "bastion_commands_total", type="PlaceOrder", outcome="accepted") \
            == placed
        assert value(after, "bastion_open_orders", market="BTC-USDT") \
            - value(before, "bastion_open_orders", market="BTC-USDT") == placed
        assert value(after, "bastion_node_seq") - value(before, "bastion_node_seq") >= placed
        assert value(after, "bastion_ack_seconds_count") \
            - value(before, "bastion_ack_seconds_count") >= placed
        assert value(after, "bastion_journal_fsync_seconds_count") >= 1
        assert value(after, "bastion_journal_batch_records_sum") \
            - value(before, "bastion_journal_batch_records_sum") >= placed
        assert value(after, "bastion_event_loop_lag_seconds_count") > 0

        # a refusal by the core: post-only that would cross is counted with its code
        r = alice.place(market="BTC-USDT", side="sell", quantity="0.01", price="100",
                        post_only=True)
        assert r.status_code == 400, r.text
        code = r.json()["code"]
        refused = scrape(alice)
        assert value(refused, "bastion_commands_total", type="PlaceOrder", outcome="rejected") \
            - value(after, "bastion_commands_total", type="PlaceOrder", outcome="rejected") == 1
        assert value(refused, "bastion_rejections_total", code=code) \
            - value(after, "bastion_rejections_total", code=code) == 1

        # market mode as a state set
        r = admin.post("/admin/markets/ETH-USDT/mode", {"mode": "halted", "reason": "test"})
        assert r.status_code == 200, r.text
        halted = scrape(alice)
        assert value(halted, "bastion_market_mode", market="ETH-USDT", mode="halted") == 1
        assert value(halted, "bastion_market_mode", market="ETH-USDT", mode="open") == 0
        assert admin.post("/admin/markets/ETH-USDT/mode",
                          {"mode": "open", "reason": "test over"}).status_code == 200

        # rate-limit refusals: every 429 is counted
        statuses = [alice.get("/v1/balances").status_code for _ in range(60)]
        limited = statuses.count(429)
        assert limited > 0
        throttled = scrape(alice)
        assert value(throttled, "bastion_rate_limit_refusals_total", limit="per-key") \
            - value(halted, "bastion_rate_limit_refusals_total", limit="per-key") == limited

        # a snapshot forks the server: counted, with how long the fork stopped the loop
        r = admin.post("/admin/ops/snapshots", {"name": "metrics-fork"})
        assert r.status_code == 201, r.text
        forked = scrape(alice)
        assert value(forked, "bastion_forks_total", kind="snapshot") \
            - value(throttled, "bastion_forks_total", kind="snapshot") == 1
        assert 0 < value(forked, "bastion_fork_pause_last_seconds", kind="snapshot") < 5
        assert ("bastion_forks_total", (("kind", "readmodel"),)) in forked

        # WebSocket connections open now
        async def sockets() -> tuple[float, float]:
            async with connect(srv.ws_url), connect(srv.ws_url):
                await asyncio.sleep(0.2)
                during = value(scrape(alice), "bastion_websocket_connections", surface="all")
            for _ in range(50):
                gone = value(scrape(alice), "bastion_websocket_connections", surface="all")
                if gone == 0:
                    break
                await asyncio.sleep(0.1)
            return during, gone

        during, gone = asyncio.run(sockets())
        assert (during, gone) == (2, 0)
    finally:
        alice.close()
        admin.close()


def test_open_orders_per_market_come_from_the_book_levels() -> None:
    """The gauge counts each book's level counts (a tally over every order held the loop
    ~80 ms per scrape at 400k orders): the same numbers after placements on both sides of
    two markets, crossing fills (full and partial) and cancels."""
    from collections import Counter

    from bastion.api.metrics import resting_orders
    from bastion.core import commands as C
    from bastion.core.engine import Engine
    from bastion.demo import BTC_USDT, ETH_USDT, demo_setup, stamp

    engine = Engine()
    cmds: list[C.Command] = list(demo_setup([1, 2]))
    for i in range(60):
        market = BTC_USDT if i % 3 else ETH_USDT
        mid = 5_000_000 if market == BTC_USDT else 300_000
        # account 2 sells at or below the bids account 1 rests: some fills, some partial
        cmds.append(C.PlaceOrder(account=1 + i % 2, market=market,
                                 side="buy" if i % 2 == 0 else "sell",
                                 price=mid - i % 7 if i % 2 == 0 else mid - 3 + i % 5,
                                 qty=10_000 * (1 + i % 3), client_id=f"m-{i}"))
    cmds += [C.CancelOrder(account=1, market=BTC_USDT, client_id=f"m-{i}") for i in (4, 10)]
    for cmd in stamp(cmds):
        engine.apply(cmd)
    tally = Counter(o.market for o in engine.orders.values())
    assert len(tally) == 2 and sum(tally.values()) < 60  # both markets, and some filled
    assert {m: n for m, n in resting_orders(engine).items() if n} == dict(tally)
