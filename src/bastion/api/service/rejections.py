"""A core refusal as the gateway reports it: one table from code + typed detail to a message in
the market's decimal units (the core speaks integer units; clients read decimals).

The detail comes from the ``Rejected`` event itself (the bound in force when the command was
refused), never from re-reading the market afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from bastion.api.convert import from_units
from bastion.api.errors import ApiError
from bastion.api.native.views import Units
from bastion.core import errors as X
from bastion.core.engine import Engine

#: field -> how its integers read in the market's units
_UNIT: dict[str, Callable[[Units, int], str]] = {
    "qty": Units.qty,
    "price": Units.price,
    "notional": lambda u, v: f"{u.quote_amount(v)} {u.quote}",
}

#: code -> message, with ``{value}``/``{limit}`` rendered in the field's unit
MESSAGES: dict[str, str] = {
    X.LOT_SIZE: "quantity {value} is not a multiple of the lot size {limit}",
    X.MIN_QUANTITY: "quantity {value} is below the minimum {limit}",
    X.MAX_QUANTITY: "quantity {value} is above the maximum {limit}",
    X.TICK_SIZE: "price {value} is not a multiple of the tick size {limit}",
    X.MIN_NOTIONAL: "order value {value} is below the minimum {limit}",
    X.PRICE_BAND: "price {value} is outside the price band (limit {limit})",
}


class Refusal(Protocol):
    """A core refusal with its detail: the ``Rejected`` event, or ``rules.Refused`` where the
    edge validates without placing (Binance ``order/test``)."""

    @property
    def code(self) -> str: ...
    @property
    def message(self) -> str: ...
    @property
    def field(self) -> str: ...
    @property
    def limit(self) -> int: ...
    @property
    def value(self) -> int: ...


def api_error(ev: Refusal, engine: Engine, cmd: object) -> ApiError:
    """The refusal as an ``ApiError`` carrying its detail, with ``limit``/``value`` also in the
    request's decimal units; where the table has the code, the message speaks those units.
    ``cmd`` is the refused command (its market, asset, side or order say which unit)."""
    market: str = getattr(cmd, "market", "") or ""
    mkt = engine.markets.get(market) if market else None
    u = Units(engine, mkt) if mkt is not None else None
    show = _shown(engine, u, cmd, ev.field)
    message = ev.message
    template = MESSAGES.get(ev.code)
    if template is not None and show is not None and ev.limit:
        message = template.format(value=show(ev.value), limit=show(ev.limit))
    shown = show is not None and (ev.limit or ev.value)
    return ApiError(ev.code, message, field=ev.field, limit=ev.limit, value=ev.value,
                    limit_text=show(ev.limit) if shown and show else "",
                    value_text=show(ev.value) if shown and show else "")


def _shown(engine: Engine, u: Units | None, cmd: object, field: str
           ) -> Callable[[int], str] | None:
    """How the field's integers read in the request's units, or None if not known."""
    if u is not None and field in _UNIT:
        unit = _UNIT[field]
        return lambda v: unit(u, v)
    if field not in _ASSET_FIELDS:
        return None
    asset = _asset_of(engine, u, cmd)
    spec = engine.assets.get(asset) if asset else None
    if spec is None:
        return None
    dp = spec.decimals
    return lambda v: f"{from_units(v, dp)} {asset}"


#: detail fields counted in an asset's smallest unit
_ASSET_FIELDS = frozenset(("available", "margin", "amount", "daily_used"))


def _asset_of(engine: Engine, u: Units | None, cmd: object) -> str:
    """The asset a balance refusal is about: the command's own, a perpetual's settle asset,
    or for spot what the order spends (quote to buy, base to sell)."""
    asset = getattr(cmd, "asset", "")
    if isinstance(asset, str) and asset:
        return asset
    if u is None:
        return ""
    pm = engine.perp.markets.get(u.market)
    if pm is not None:
        return pm.settle
    side = getattr(cmd, "side", "")
    if not side:
        order = engine.orders.get(getattr(cmd, "order_id", 0))
        side = order.side if order is not None else ""
    return {"buy": u.quote, "sell": u.base}.get(side, "")
