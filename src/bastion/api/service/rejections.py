"""A core refusal as the gateway reports it: one table from code + typed detail to a message in
the market's decimal units (the core speaks integer units; clients read decimals).

The detail comes from the ``Rejected`` event itself (the bound in force when the command was
refused), never from re-reading the market afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

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


def api_error(ev: Refusal, engine: Engine, market: str) -> ApiError:
    """The refusal as an ``ApiError`` carrying its detail; where the table has the code and
    the market is known, the message speaks the market's units."""
    message = ev.message
    template = MESSAGES.get(ev.code)
    unit = _UNIT.get(ev.field)
    mkt = engine.markets.get(market) if market else None
    if template is not None and unit is not None and mkt is not None and ev.limit:
        u = Units(engine, mkt)
        message = template.format(value=unit(u, ev.value), limit=unit(u, ev.limit))
    return ApiError(ev.code, message, field=ev.field, limit=ev.limit, value=ev.value)
