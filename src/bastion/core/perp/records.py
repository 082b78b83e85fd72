"""The perpetual records every order, fill and re-key reads: a market's terms and oracle and
funding state, its margin tiers, and one account's cross margin in one settle asset.

Plain typed ``@final`` acyclic classes, like ``core.records``: compiled, the margin ledger
reads their fields directly instead of through a Struct's generic attribute lookup, and the
garbage collector never tracks them. The snapshot keeps the Struct forms
(``perp.state.PerpMarketState``, ``TierState``, ``MarginAccountState``), converted field for
field at export and restore, so the snapshot bytes and the state hash are unchanged.

``Position`` too (snapshot form ``perp.state.PositionState``): the API's read model keeps its
own ``Position`` records and checkpoints them in the snapshot form.

Market and asset names are interned as the records are made: a restored snapshot decodes a
fresh string per record, and an equal name that is another object makes a compare (order
entry checks a margin record's asset against the market's settle asset) or a lookup by name
read that record's own cold string; interned, the compare is a pointer's.
"""

from sys import intern
from typing import final

from mypy_extensions import mypyc_attr

from bastion.core.perp.liqindex import AccountKeys


@final
@mypyc_attr(acyclic=True)
class Tier:
    """A margin tier; ``cum_ppm`` keeps maintenance margin continuous across tiers
    (``mm = ceil((notional * mmr_ppm - cum_ppm) / 1e6)``, Binance's "maintenance amount")."""

    __slots__ = ("cum_ppm", "max_leverage", "max_notional", "mmr_ppm")

    def __init__(self, max_notional: int, max_leverage: int, mmr_ppm: int,
                 cum_ppm: int = 0) -> None:
        self.max_notional = max_notional
        self.max_leverage = max_leverage
        self.mmr_ppm = mmr_ppm
        self.cum_ppm = cum_ppm

    def __repr__(self) -> str:
        return (f"Tier(max_notional={self.max_notional}, max_leverage={self.max_leverage}, "
                f"mmr_ppm={self.mmr_ppm}, cum_ppm={self.cum_ppm})")


@final
@mypyc_attr(acyclic=True)
class PerpMarket:
    """A perpetual market's terms, oracle, funding and risk state (field meanings:
    ``perp.state.PerpMarketState``)."""

    __slots__ = (
        "anchor_index", "anchor_mark", "anchor_ts", "armed", "basis", "basis_sum",
        "basis_window_ms", "default_leverage", "funding_clamp_e9", "funding_index",
        "funding_interval_ms", "funding_pool", "funding_rate_e9", "guards", "index",
        "index_max_age_ms", "index_ts", "interest_e9", "last_funding_ts", "liq_breaker_ppm",
        "liq_fee_ppm", "liq_slippage_bps", "liq_step_ppm", "liq_window", "liq_window_ms",
        "liq_window_sum", "mark", "market", "max_funding_e9", "max_move_bps", "min_sources",
        "move_window_ms", "open_interest", "premium_count", "premium_sum", "price_band_bps",
        "price_div", "settle", "source_band_bps", "source_max_age_ms", "tiers")

    def __init__(self, *, market: str, settle: str, price_div: int, tiers: list[Tier],
                 default_leverage: int, price_band_bps: int, funding_interval_ms: int,
                 interest_e9: int, funding_clamp_e9: int, max_funding_e9: int,
                 min_sources: int, source_max_age_ms: int, source_band_bps: int,
                 index_max_age_ms: int, max_move_bps: int, move_window_ms: int,
                 basis_window_ms: int, liq_fee_ppm: int, liq_step_ppm: int,
                 liq_slippage_bps: int, liq_breaker_ppm: int, liq_window_ms: int,
                 guards: bool = True, index: int = 0, index_ts: int = 0, mark: int = 0,
                 anchor_index: int = 0, anchor_mark: int = 0, anchor_ts: int = 0,
                 armed: bool = False, basis: list[tuple[int, int]] | None = None,
                 basis_sum: int = 0, funding_index: int = 0, funding_pool: int = 0,
                 last_funding_ts: int = 0, funding_rate_e9: int = 0, premium_sum: int = 0,
                 premium_count: int = 0, open_interest: int = 0,
                 liq_window: list[tuple[int, int]] | None = None,
                 liq_window_sum: int = 0) -> None:
        self.market = intern(market)
        self.settle = intern(settle)
        self.price_div = price_div
        self.tiers = tiers
        self.default_leverage = default_leverage
        self.price_band_bps = price_band_bps
        self.funding_interval_ms = funding_interval_ms
        self.interest_e9 = interest_e9
        self.funding_clamp_e9 = funding_clamp_e9
        self.max_funding_e9 = max_funding_e9
        self.min_sources = min_sources
        self.source_max_age_ms = source_max_age_ms
        self.source_band_bps = source_band_bps
        self.index_max_age_ms = index_max_age_ms
        self.max_move_bps = max_move_bps
        self.move_window_ms = move_window_ms
        self.basis_window_ms = basis_window_ms
        self.liq_fee_ppm = liq_fee_ppm
        self.liq_step_ppm = liq_step_ppm
        self.liq_slippage_bps = liq_slippage_bps
        self.liq_breaker_ppm = liq_breaker_ppm
        self.liq_window_ms = liq_window_ms
        self.guards = guards
        self.index = index
        self.index_ts = index_ts
        self.mark = mark
        self.anchor_index = anchor_index
        self.anchor_mark = anchor_mark
        self.anchor_ts = anchor_ts
        self.armed = armed
        self.basis: list[tuple[int, int]] = [] if basis is None else basis
        self.basis_sum = basis_sum
        self.funding_index = funding_index
        self.funding_pool = funding_pool
        self.last_funding_ts = last_funding_ts
        self.funding_rate_e9 = funding_rate_e9
        self.premium_sum = premium_sum
        self.premium_count = premium_count
        self.open_interest = open_interest
        self.liq_window: list[tuple[int, int]] = [] if liq_window is None else liq_window
        self.liq_window_sum = liq_window_sum

    def __repr__(self) -> str:
        return (f"PerpMarket(market={self.market!r}, settle={self.settle!r}, "
                f"mark={self.mark}, index={self.index}, funding_index={self.funding_index}, "
                f"open_interest={self.open_interest}, armed={self.armed})")


@final
@mypyc_attr(acyclic=True)
class Position:
    """One account's position in one market. ``funding_index``: the market's index when it
    last settled funding (it settles lazily, when its size changes; equity always counts what
    it owes since). The snapshot form is ``perp.state.PositionState``. ``pm``: the market's
    record, when the margin ledger holds the position (a market's record is never replaced,
    except by a restore, which recreates the positions too), so risk and re-keys need no lookup
    by name."""

    __slots__ = ("account", "cost", "funding_index", "funding_paid", "market", "pm",
                 "realized_pnl", "size")

    def __init__(self, account: int, market: str, size: int, cost: int, funding_index: int,
                 realized_pnl: int = 0, funding_paid: int = 0,
                 pm: PerpMarket | None = None) -> None:
        # what risk, re-keys and fills read first and together (compiled, fields lie in
        # the order first assigned)
        self.pm = pm
        self.size = size
        self.cost = cost
        self.funding_index = funding_index
        self.account = account
        self.market = intern(market)
        self.realized_pnl = realized_pnl
        self.funding_paid = funding_paid

    def __repr__(self) -> str:
        return (f"Position(account={self.account}, market={self.market!r}, size={self.size}, "
                f"cost={self.cost}, funding_index={self.funding_index}, "
                f"realized_pnl={self.realized_pnl}, funding_paid={self.funding_paid})")


@final
@mypyc_attr(acyclic=True)
class MarginAccount(AccountKeys):
    """Cross margin of one account in one settle asset. ``collateral`` is the wallet balance
    (transfers, realized PnL, fees, funding); ``order_im`` the sum of open orders' holds.
    ``positions`` (market -> position) is the account's cross-margin book, kept by the margin
    ledger and not part of the snapshot (restore rebuilds it from the positions);
    ``one_order`` the id of one open perp order of the account (0: none), indexed here rather
    than in a set: among many accounts most hold at most one, and a set costs two cold cache
    lines per order and per cancel; ``orders`` is the account's set in the ledger's
    ``orders_of`` index (its other open orders) once a second order needed it (the index
    keeps emptied sets, so the reference stays the index's own). The record is also the
    account's keys record in the liquidation index (``AccountKeys``, indexed there from its
    first re-key): a re-key reads and writes its keys here, with no other object to reach.
    ``only`` the account's position when it holds exactly one (the usual case), kept with
    ``positions`` by the margin ledger: order entry and re-keys read it without walking the
    dict, one cold object fewer per order among many accounts. ``levered``: whether
    ``leverage`` holds any setting (most accounts never make one), so order entry does not
    touch the dict to find the market default; settings go through ``set_leverage``."""

    __slots__ = ("account", "asset", "collateral", "leverage", "levered", "only", "one_order",
                 "order_im", "orders", "positions")

    def __init__(self, account: int, asset: str, collateral: int = 0, order_im: int = 0,
                 leverage: dict[str, int] | None = None) -> None:
        super().__init__()
        self.account = account
        self.leverage: dict[str, int] = {} if leverage is None else leverage
        self.positions: dict[str, Position] = {}
        self.orders: set[int] | None = None
        # what order entry, a fill and a re-key read, last and together (compiled, fields
        # lie in the order first assigned, after the base's): one cache line apart from
        # the record's header
        self.asset = intern(asset)
        self.levered = bool(self.leverage)
        self.only: Position | None = None
        self.collateral = collateral
        self.order_im = order_im
        self.one_order = 0

    def set_leverage(self, market: str, leverage: int) -> None:
        self.leverage[market] = leverage
        self.levered = True

    def __repr__(self) -> str:
        return (f"MarginAccount(account={self.account}, asset={self.asset!r}, "
                f"collateral={self.collateral}, order_im={self.order_im}, "
                f"leverage={self.leverage!r})")
