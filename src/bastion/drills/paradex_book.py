"""The Paradex, Jan 2026 starting point as journaled history: a perpetual with a large
cumulative funding index (12 hours of capped funding) and ``pairs`` leveraged long/short
pairs at 8x, the longs protected by TP/SL triggers. Shared by the drill (seeded into its
deployment) and the compensation test (the same commands through a node)."""

from __future__ import annotations

from bastion.core import commands as C

MARKET = "BTC-USDT-PERP"
PX = 5_000_000               # 50,000.00 USDT
USDT = 10**8
LOTS = 2_000_000             # 0.02 BTC: 1,000 USDT notional per position
HOUR = 3_600_000
LONGS_FROM = 10
SHORTS_FROM = 100
MAKERS = (1, 2)


def sources(price: int, ts: int) -> list[C.SourcePrice]:
    return [C.SourcePrice(source=s, price=price, ts=ts) for s in ("a", "b", "c")]


def history(pairs: int = 30, guards: bool = True, insurance: int = 1_000_000 * USDT,
            start_ms: int = 0) -> list[tuple[int, C.Command]]:
    """(dt ms, command) steps; a node clock starting at ``start_ms`` stamps them (sources
    carry their own timestamps, so the clock is replayed here too)."""
    now = start_ms
    steps: list[tuple[int, C.Command]] = []

    def step(dt: int, cmd: C.Command) -> None:
        nonlocal now
        now += dt
        steps.append((dt, cmd))

    def index(dt: int, price: int = PX) -> None:
        step(dt, C.UpdateIndex(market=MARKET, sources=sources(price, now + dt)))

    for asset in ("USDT", "BTC"):
        step(1, C.CreateAsset(asset=asset, decimals=8))
    step(1, C.CreatePerpMarket(
        market=MARKET, base="BTC", settle="USDT", price_decimals=2, tick_size=10,
        contract_size=100_000, min_qty=100_000, max_qty=10**11, min_notional=5 * USDT,
        maker_fee_ppm=200, taker_fee_ppm=500, max_leverage=10, maintenance_ppm=50_000,
        default_leverage=10, funding_interval_ms=HOUR, max_funding_e9=10_000_000,
        min_sources=2, source_max_age_ms=10_000, index_max_age_ms=60_000,
        max_move_bps=1_000, liq_breaker_ppm=200_000, guards=guards, reason="paradex drill"))
    step(1, C.FundInsurance(asset="USDT", amount=insurance, reason="insurance fund"))
    longs = list(range(LONGS_FROM, LONGS_FROM + pairs))
    shorts = list(range(SHORTS_FROM, SHORTS_FROM + pairs))
    for a in (*MAKERS, *longs, *shorts):
        margin = 100_000 * USDT if a in MAKERS else 125 * USDT      # 8x on 1,000 USDT
        step(1, C.Deposit(account=a, asset="USDT", amount=margin, reason="drill"))
        step(1, C.AddMargin(account=a, asset="USDT", amount=margin))
    index(1)
    # a persistent +2% premium drives funding to its 1%/h cap for 12 hours
    step(1, C.PlaceOrder(account=1, market=MARKET, side="buy", qty=100_000,
                         price=PX * 102 // 100))
    step(1, C.PlaceOrder(account=2, market=MARKET, side="sell", qty=100_000,
                         price=PX * 103 // 100))
    for _ in range(12):
        index(HOUR - 2_000)
        index(1_000)
        step(1_000, C.FundingTick(market=MARKET))
    step(1, C.CancelAll(market=MARKET, reason="setup"))
    for long, short in zip(longs, shorts, strict=True):
        step(1, C.PlaceOrder(account=short, market=MARKET, side="sell", qty=LOTS, price=PX))
        step(1, C.PlaceOrder(account=long, market=MARKET, side="buy", qty=LOTS, price=PX))
        step(1, C.PlaceTrigger(account=long, market=MARKET, side="sell", qty=LOTS,
                               trigger_price=PX * 80 // 100, order_type="stop_market"))
        step(1, C.PlaceTrigger(account=long, market=MARKET, side="sell", qty=LOTS,
                               trigger_price=PX * 130 // 100, order_type="take_profit"))
    index(1)
    return steps


def corruption() -> C.FundingTick:
    """What the maintenance race wrote: the cumulative funding index reset to zero."""
    return C.FundingTick(market=MARKET, index=0)
