"""Demo markets and funded accounts: the embedded default, tests and benchmarks share them."""

from bastion.core import commands as C

BTC_USDT = "BTC-USDT"
ETH_USDT = "ETH-USDT"


def demo_setup(accounts: list[int] | None = None, usdt: int = 10**14,
               btc: int = 10**11, eth: int = 10**12) -> list[C.Command]:
    """Assets (8 decimals each), two spot markets and funded accounts.

    BTC-USDT: price in 0.01 USDT, tick 0.01, lot 0.00001 BTC; fees 2/5 bps maker/taker.
    """
    cmds: list[C.Command] = [
        C.CreateAsset(asset="USDT", decimals=8),
        C.CreateAsset(asset="BTC", decimals=8),
        C.CreateAsset(asset="ETH", decimals=8),
        C.CreateMarket(market=BTC_USDT, base="BTC", quote="USDT", price_decimals=2,
                       tick_size=1, lot_size=1_000, min_qty=1_000, max_qty=100_000_000_000,
                       min_notional=10**7, maker_fee_ppm=200, taker_fee_ppm=500,
                       reason="demo"),
        C.CreateMarket(market=ETH_USDT, base="ETH", quote="USDT", price_decimals=2,
                       tick_size=1, lot_size=10_000, min_qty=10_000, max_qty=1_000_000_000_000,
                       min_notional=10**7, maker_fee_ppm=200, taker_fee_ppm=500,
                       reason="demo"),
    ]
    for account in accounts or [1, 2]:
        cmds.append(C.Deposit(account=account, asset="USDT", amount=usdt, reason="demo"))
        cmds.append(C.Deposit(account=account, asset="BTC", amount=btc, reason="demo"))
        cmds.append(C.Deposit(account=account, asset="ETH", amount=eth, reason="demo"))
    return cmds


BTC_USDT_PERP = "BTC-USDT-PERP"


def demo_perp_setup(accounts: list[int] | None = None, margin: int = 10**13,
                    insurance: int = 10**13) -> list[C.Command]:
    """A linear BTC perpetual settled in USDT; run after ``demo_setup`` (it needs the assets
    and the accounts' USDT). Each account moves ``margin`` (100,000 USDT) into cross margin.

    BTC-USDT-PERP: price in 0.01 USDT, tick 0.10, contract 0.001 BTC; 2/5 bps fees; up to 50x
    below 50k USDT notional (1% maintenance), 20x to 250k (2.5%), 10x above (5%); 8 h funding.
    The oracle is live only once a feeder sends ``UpdateIndex`` (no mark, no orders).
    """
    cmds: list[C.Command] = [
        C.CreatePerpMarket(
            market=BTC_USDT_PERP, base="BTC", settle="USDT", price_decimals=2, tick_size=10,
            contract_size=100_000, min_qty=100_000, max_qty=100_000_000_000,
            min_notional=5 * 10**8, maker_fee_ppm=200, taker_fee_ppm=500,
            tiers=[C.MarginTier(max_notional=50_000 * 10**8, max_leverage=50,
                                maintenance_ppm=10_000),
                   C.MarginTier(max_notional=250_000 * 10**8, max_leverage=20,
                                maintenance_ppm=25_000),
                   C.MarginTier(max_notional=2**62, max_leverage=10, maintenance_ppm=50_000)],
            default_leverage=10, reason="demo"),
        C.FundInsurance(asset="USDT", amount=insurance, reason="demo insurance fund"),
    ]
    for account in accounts or [1, 2]:
        cmds.append(C.AddMargin(account=account, asset="USDT", amount=margin))
    return cmds


def stamp(cmds: list[C.Command], start_seq: int = 1, start_ts: int = 1_700_000_000_000,
          step_ms: int = 1) -> list[C.Command]:
    """Sequence and timestamp commands the way the node's sequencer does."""
    for i, cmd in enumerate(cmds):
        cmd.seq = start_seq + i
        cmd.ts = start_ts + i * step_ms
    return cmds
