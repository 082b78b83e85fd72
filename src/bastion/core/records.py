"""The records the order path reads and writes on every command: the open order, the market's
terms and the spot account, as plain typed classes rather than msgspec Structs.

Compiled (``bastion.corebuild``), they are native classes whose fields the compiled order path
reads and writes directly, where a Struct is reached only generically; none can be part of a
reference cycle, so they are ``acyclic`` (the garbage collector never tracks them). The
snapshot keeps the Struct forms (``state.OrderState``, ``state.MarketState``) and converts at
export and restore only, field for field, so the snapshot bytes and the state hash are
unchanged.
"""

from typing import final

from mypy_extensions import mypyc_attr

from bastion.core.commands import MarketMode, Side, STPMode


@final
@mypyc_attr(acyclic=True)
class Order:
    __slots__ = ("account", "acct", "client_id", "filled_quote", "hold", "live", "maker_cap",
                 "margin", "market", "order_id", "post_only", "price", "qty", "remaining", "side",
                 "stp", "taker_cap", "tif", "ts")

    def __init__(self, order_id: int, account: int, market: str, side: Side, price: int,
                 qty: int, remaining: int, hold: int, ts: int, tif: str = "GTC",
                 post_only: bool = False, client_id: str = "", stp: STPMode | None = None,
                 maker_cap: int = 0, taker_cap: int = 0, filled_quote: int = 0,
                 live: bool = True, acct: "Account | None" = None,
                 margin: object = None) -> None:
        self.order_id = order_id
        self.account = account
        self.market = market
        self.side: Side = side
        self.price = price
        self.qty = qty
        self.remaining = remaining
        self.hold = hold
        self.ts = ts
        self.tif = tif
        self.post_only = post_only
        self.client_id = client_id
        self.stp: STPMode | None = stp
        #: fee rates at placement: a later fee increase never exceeds what the hold covered.
        self.maker_cap = maker_cap
        self.taker_cap = taker_cap
        self.filled_quote = filled_quote
        self.live = live
        #: the spot account record, when order entry had it at hand: the spot ledger then
        #: needs no lookup by account id (accounts are created once and never replaced; a
        #: restored order has none and is looked up)
        self.acct = acct
        #: the same for a perpetual order: its account's margin record
        #: (``perp.records.MarginAccount``, a layer above, hence ``object``; the margin ledger
        #: checks its type), set when the margin ledger first needs it
        self.margin = margin

    def __repr__(self) -> str:
        return (f"Order(order_id={self.order_id}, account={self.account}, "
                f"market={self.market!r}, side={self.side!r}, price={self.price}, "
                f"qty={self.qty}, remaining={self.remaining}, hold={self.hold}, "
                f"tif={self.tif!r}, live={self.live})")


@final
@mypyc_attr(acyclic=True)
class Market:
    __slots__ = ("base", "kind", "last_price", "lot_size", "maker_fee_ppm", "market",
                 "market_band_bps", "max_qty", "min_notional", "min_qty", "mode",
                 "mode_reason", "mode_until", "price_decimals", "price_div", "quote",
                 "perp", "ref_band_bps", "ref_price", "taker_fee_ppm", "tick_size")

    def __init__(self, market: str, base: str, quote: str, price_decimals: int, price_div: int,
                 tick_size: int, lot_size: int, min_qty: int, max_qty: int, min_notional: int,
                 maker_fee_ppm: int, taker_fee_ppm: int, market_band_bps: int,
                 ref_band_bps: int, kind: str = "spot", mode: MarketMode = "open",
                 mode_reason: str = "", mode_until: int = 0, ref_price: int = 0,
                 last_price: int = 0, perp: object = None) -> None:
        self.market = market
        self.base = base
        self.quote = quote
        self.price_decimals = price_decimals
        #: notional (quote units) = price * qty // price_div; fixed at creation from the decimals.
        self.price_div = price_div
        self.tick_size = tick_size
        self.lot_size = lot_size
        self.min_qty = min_qty
        self.max_qty = max_qty
        self.min_notional = min_notional
        self.maker_fee_ppm = maker_fee_ppm
        self.taker_fee_ppm = taker_fee_ppm
        self.market_band_bps = market_band_bps
        self.ref_band_bps = ref_band_bps
        self.kind = kind
        self.mode: MarketMode = mode
        self.mode_reason = mode_reason
        self.mode_until = mode_until
        self.ref_price = ref_price
        self.last_price = last_price
        #: a perpetual market's record (``perp.records.PerpMarket``, a layer above, hence
        #: ``object``; the margin ledger checks its type), linked on first use: a market's
        #: perp record is never replaced (a restore makes new records of both)
        self.perp = perp

    def copy(self) -> "Market":
        return Market(self.market, self.base, self.quote, self.price_decimals, self.price_div,
                      self.tick_size, self.lot_size, self.min_qty, self.max_qty,
                      self.min_notional, self.maker_fee_ppm, self.taker_fee_ppm,
                      self.market_band_bps, self.ref_band_bps, self.kind, self.mode,
                      self.mode_reason, self.mode_until, self.ref_price, self.last_price,
                      self.perp)

    def __repr__(self) -> str:
        return (f"Market(market={self.market!r}, kind={self.kind!r}, mode={self.mode!r}, "
                f"tick_size={self.tick_size}, lot_size={self.lot_size}, "
                f"maker_fee_ppm={self.maker_fee_ppm}, taker_fee_ppm={self.taker_fee_ppm})")


@final
@mypyc_attr(acyclic=True)
class Account:
    """A spot account: balances by asset, available and held for open orders."""

    __slots__ = ("account", "available", "held", "margin", "stp")

    def __init__(self, account: int, available: dict[str, int], held: dict[str, int],
                 stp: STPMode = "expire_taker") -> None:
        self.account = account
        self.available = available
        self.held = held
        self.stp: STPMode = stp
        #: the margin record (``perp.records.MarginAccount``, typed ``object`` like
        #: ``Order.margin``) the margin ledger last found for this account: perpetual order
        #: entry then needs no lookup by account id; not part of the snapshot
        self.margin: object = None

    def __repr__(self) -> str:
        return (f"Account(account={self.account}, available={self.available!r}, "
                f"held={self.held!r}, stp={self.stp!r})")
