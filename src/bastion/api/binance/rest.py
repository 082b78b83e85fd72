"""Binance-compatible surface: enough of ``/api/v3`` (spot), ``/fapi`` (USD-M perpetuals) and
``/sapi`` for unmodified ccxt ``binance`` / ``binanceusdm`` pointed at this server.

Auth is Binance's: header ``X-MBX-APIKEY``; ``signature`` = hex HMAC-SHA256 of the exact
url-encoded parameters (query string, then form body) including ``timestamp`` and
``recvWindow``. It runs through the same key store, receive window, replay cache, permission
and rate-limit checks as the native API. Errors are ``{"code": -NNNN, "msg": ...}`` with the
codes and messages ccxt maps to its own error classes (see ``_CODES``).

Symbols: a spot market ``BTC-USDT`` is ``BTCUSDT`` on ``/api``; a perpetual ``BTC-USDT-PERP``
is ``BTCUSDT`` on ``/fapi``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal
from urllib.parse import parse_qsl

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bastion.api import errors as A
from bastion.api.app_context import Context
from bastion.api.convert import from_units, to_units, trim
from bastion.api.errors import ApiError
from bastion.api.http import Handler, now_ms
from bastion.api.native import perps
from bastion.api.native import views as V
from bastion.api.native.routes import INTERVALS
from bastion.api.read.model import CANCELED, EXPIRED, FILLED, OPEN, PARTIAL, OrderRecord
from bastion.api.security.auth import read_of, require
from bastion.api.security.keys import ApiKey
from bastion.api.service.gateway import Gateway
from bastion.api.service.rejections import api_error
from bastion.core import commands as C
from bastion.core import errors as X
from bastion.core import events as E
from bastion.core.engine import Engine
from bastion.core.orders import order_terms
from bastion.core.perp.calc import PPM
from bastion.core.rules import STP_MODES, Refused
from bastion.core.state import Account, Market
from bastion.textnum import ascii_int

_enc = msgspec.json.Encoder()


# core / gateway code -> (binance code, message, http status); messages matter: ccxt matches
# some exactly ("Account has insufficient balance..." -> InsufficientFunds).
_CODES: dict[str, tuple[int, str, int]] = {
    A.UNAUTHORIZED: (-2015, "Invalid API-key, IP, or permissions for action.", 401),
    A.FORBIDDEN: (-2015, "Invalid API-key, IP, or permissions for action.", 401),
    A.INVALID_SIGNATURE: (-1022, "Signature for this request is not valid.", 401),
    A.REPLAYED: (-1022, "Signature for this request was already used (replay).", 401),
    A.TIMESTAMP_OUTSIDE_WINDOW: (-1021, "Timestamp for this request is outside of the "
                                        "recvWindow.", 400),
    A.RATE_LIMITED: (-1003, "Too many requests; current limit is exceeded.", 429),
    A.BODY_TOO_LARGE: (-1000, "Request body too large.", 413),
    A.MALFORMED_REQUEST: (-1102, "A mandatory parameter was not sent, was empty/null, or "
                                 "malformed.", 400),
    A.NOT_FOUND: (-1000, "Unknown endpoint.", 404),
    A.METHOD_NOT_ALLOWED: (-1000, "Method not allowed.", 405),
    A.UNAVAILABLE: (-1001, "Internal error; unable to process your request. Please try "
                           "again.", 503),
    A.NOT_SUPPORTED: (-1130, "Data sent for parameter is not valid.", 400),
    X.UNKNOWN_MARKET: (-1121, "Invalid symbol.", 400),
    X.UNKNOWN_ORDER: (-2011, "Unknown order sent.", 400),
    X.INSUFFICIENT_FUNDS: (-2010, "Account has insufficient balance for requested action.", 400),
    X.UNKNOWN_ACCOUNT: (-2010, "Account has insufficient balance for requested action.", 400),
    X.INSUFFICIENT_MARGIN: (-2010, "Account has insufficient balance for requested action.",
                            400),
    X.POST_ONLY_WOULD_CROSS: (-2010, "Order would immediately match and take.", 400),
    X.TICK_SIZE: (-1013, "Filter failure: PRICE_FILTER", 400),
    X.LOT_SIZE: (-1013, "Filter failure: LOT_SIZE", 400),
    X.MIN_QUANTITY: (-1013, "Filter failure: LOT_SIZE", 400),
    X.MAX_QUANTITY: (-1013, "Filter failure: LOT_SIZE", 400),
    X.PRICE_BAND: (-1013, "Filter failure: PERCENT_PRICE_BY_SIDE", 400),
    X.MIN_NOTIONAL: (-2010, "Filter failure: NOTIONAL", 400),
    X.NO_LIQUIDITY: (-2010, "Order would not fill: no liquidity on the other side.", 400),
    X.FOK_NOT_FILLABLE: (-2010, "Order could not be filled completely (FOK) and was rejected.",
                         400),
    X.MARKET_MODE: (-2010, "Market is closed.", 400),
    X.REDUCE_ONLY: (-2010, "ReduceOnly Order is rejected.", 400),
    X.NO_MARK_PRICE: (-2010, "Order rejected: the market has no mark price yet.", 400),
    X.ORACLE_STALE: (-2010, "Order rejected: the price oracle is stale.", 400),
    X.NOT_PERP: (-1121, "Invalid symbol.", 400),
    X.INVALID_LEVERAGE: (-1130, "Data sent for parameter 'leverage' is not valid.", 400),
    X.DUPLICATE_CLIENT_ID: (-2010, "Duplicate order sent.", 400),
    X.INVALID_PRICE: (-1013, "Invalid price.", 400),
    X.INVALID_QUANTITY: (-1013, "Invalid quantity.", 400),
    X.INVALID_AMOUNT: (-1013, "Invalid amount.", 400),
    X.INVALID_ARGUMENT: (-1130, "Data sent for parameter is not valid.", 400),
    X.NO_CHANGE: (-2010, "No need to modify the order.", 400),
}

#: (code, detail field) -> Binance code and message, where the detail changes the answer
_BY_FIELD: dict[tuple[str, str], tuple[int, str]] = {
    (A.UNAUTHORIZED, "key"): (-2014, "API-key format invalid."),
    (X.INVALID_PRICE, "decimals"): (-1111, "Precision is over the maximum defined for this "
                                           "asset."),
    (X.INVALID_QUANTITY, "decimals"): (-1111, "Precision is over the maximum defined for this "
                                              "asset."),
    (X.MARKET_MODE, "post_only"): (-2010, "Market accepts only post-only (LIMIT_MAKER / GTX) "
                                          "orders right now."),
}

#: the core's default self-trade prevention mode of an account
DEFAULT_STP = Account(account=0, available={}, held={}).stp

_STATUS = {OPEN: "NEW", PARTIAL: "PARTIALLY_FILLED", FILLED: "FILLED", CANCELED: "CANCELED",
           EXPIRED: "EXPIRED"}
_MODE_STATUS = {"open": "TRADING", "post_only": "POST_ONLY", "recovery": "POST_ONLY",
                "cancel_only": "CANCEL_ONLY", "halted": "HALT", "closed": "END_OF_DAY"}


class BinanceError(Exception):
    """An error that is already in Binance's vocabulary (parameter problems)."""

    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.status = status


def _missing(name: str) -> BinanceError:
    return BinanceError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or "
                               "malformed.")


def error_response(err: ApiError | BinanceError) -> Response:
    if isinstance(err, BinanceError):
        return Response(_enc.encode({"code": err.code, "msg": err.msg}), status_code=err.status,
                        media_type="application/json")
    code, msg, status = binance_error(err)
    return Response(_enc.encode({"code": code, "msg": msg}), status_code=status,
                    media_type="application/json", headers=dict(err.headers))


def binance_error(err: ApiError) -> tuple[int, str, int]:
    """A gateway error in Binance's vocabulary: ``(code, msg, http status)``."""
    code, msg, status = _CODES.get(err.code, (-1000, "An unknown error occurred while "
                                                     "processing the request.", err.status))
    refined = _BY_FIELD.get((err.code, err.field))
    if refined is not None:
        code, msg = refined
    # ccxt matches some -2010 messages exactly; elsewhere our detail helps the human reader
    if err.message and code not in (-2010, -2014, -2015):
        msg = f"{msg} ({err.message})"
    return code, msg, status


def encode(data: Any) -> bytes:
    return _enc.encode(data)


def J(data: Any, status: int = 200) -> Response:
    return Response(_enc.encode(data), status_code=status, media_type="application/json")


# ---------------------------------------------------------------- parameters and auth

class Params:
    """Parsed query + form parameters of one request, with Binance-style validation errors."""

    def __init__(self, items: dict[str, str]) -> None:
        self.items = items

    def opt(self, name: str) -> str | None:
        return self.items.get(name) or None

    def req(self, name: str) -> str:
        v = self.items.get(name)
        if not v:
            raise _missing(name)
        return v

    def int(self, name: str, default: int | None = None, low: int = 0,
            high: int = 2**62) -> int | None:
        v = self.opt(name)
        if v is None:
            return default
        value = ascii_int(v)
        if value is None or not low <= value <= high:
            raise BinanceError(-1100, f"Illegal characters found in parameter '{name}'; "
                                      f"legal range is {low}..{high}.")
        return value

    def flag(self, name: str) -> bool:
        v = self.items.get(name)
        if not v:
            return False
        v = v.lower()
        if v not in ("true", "false"):
            raise BinanceError(-1130, f"Data sent for parameter '{name}' is not valid.")
        return v == "true"


def _strip_signature(raw: bytes) -> tuple[bytes, str | None]:
    """Remove ``signature=...`` from an url-encoded string, keeping every other byte."""
    at = raw.rfind(b"signature=")
    if at < 0:
        return raw, None
    if (at == 0 or raw[at - 1] == 0x26) and raw.find(b"&", at) < 0 \
            and raw.count(b"signature=") == 1:  # what clients send: one, the last field
        return raw[:at - 1] if at else b"", raw[at + 10:].decode("ascii", "replace")
    parts = raw.split(b"&")
    sig = None
    kept = []
    for p in parts:
        if p.startswith(b"signature="):
            sig = p[10:].decode("ascii", "replace")
        else:
            kept.append(p)
    return b"&".join(kept), sig


async def read_params(request: Request) -> tuple[Params, bytes, bytes]:
    qs: bytes = request.scope.get("query_string", b"")
    # Binance reads parameters from the query string and the form body alike, whatever the
    # method (python-binance sends DELETE parameters in the body)
    body = b"" if request.method in ("GET", "HEAD") else await request.body()
    return parse_params(qs, body), qs, body


#: more fields than this in one request is refused (as ``parse_qsl(max_num_fields=...)``)
MAX_FIELDS = 100
#: a plain form rewritten as a JSON object of strings, decoded in C
_FORM_AS_JSON = msgspec.json.Decoder(dict[str, str])


def _plain_form(raw: bytes) -> dict[str, str] | None:
    """``name=value&...`` in one C pass, or None where that could read it differently from
    ``parse_qsl``. Without ``%`` or ``+`` nothing needs unquoting, and without a quote or a
    backslash nothing can escape a JSON string, so ``&`` -> ``","`` and ``=`` -> ``":"`` is a valid
    JSON object exactly when every field is one ``name=value`` (what clients send); a value
    holding ``=``, an empty field, a control character or bad UTF-8 makes it invalid, and
    the caller reads field by field. Repeated names: the last wins, as in a dict built from
    ``parse_qsl``."""
    # ``find``, not ``in``: ``bytes.__contains__`` tries the needle as an int first and
    # formats a TypeError to discard, about 1,700 instructions per test
    if (raw.find(b"%") >= 0 or raw.find(b"+") >= 0 or raw.find(b'"') >= 0
            or raw.find(b"\\") >= 0 or raw.count(b"&") >= MAX_FIELDS):
        return None
    try:
        return _FORM_AS_JSON.decode(
            b'{"' + raw.replace(b"&", b'","').replace(b"=", b'":"') + b'"}')
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None


def parse_params(qs: bytes, body: bytes) -> Params:
    """Query string and form body as one parameter map (the body wins), as ``parse_qsl``
    reads them; a plain form (``_plain_form``, what clients send) in one C pass."""
    items: dict[str, str] = {}
    try:
        for raw in (qs, body):
            if not raw:
                continue
            plain = _plain_form(raw)
            if plain is not None:
                if items:
                    items.update(plain)
                else:
                    items = plain
                continue
            if b"%" in raw or b"+" in raw:
                for k, v in parse_qsl(raw.decode("utf-8"), keep_blank_values=True,
                                      strict_parsing=False, max_num_fields=MAX_FIELDS):
                    items[k] = v
                continue
            text = raw.decode("utf-8")
            parts = text.split("&")
            if len(parts) > MAX_FIELDS:
                raise ValueError("Max number of fields exceeded")
            for part in parts:
                if part:
                    k, _, v = part.partition("=")
                    items[k] = v
    except (UnicodeDecodeError, ValueError) as exc:
        raise BinanceError(-1100, f"Illegal characters found in a parameter: {exc}") from None
    return Params(items)


def authenticate(ctx: Context, request: Request, qs: bytes, body: bytes, p: Params,
                 permission: str) -> ApiKey:
    return verify(ctx, request.headers.get("x-mbx-apikey"), request.method, request.url.path,
                  qs, body, p, permission, request.scope.get("client"))


def verify(ctx: Context, api_key: str | None, method: str, path: str, qs: bytes, body: bytes,
           p: Params, permission: str, conn: object = None) -> ApiKey:
    """A signed request's key (signature, timestamp window, replay, permission, per-key
    limit), from its parts: the routed handlers and the bare order entry share it."""
    b2, sig = _strip_signature(body)
    if qs:
        q2, sig_q = _strip_signature(qs)
        b2 = q2 + b2
        sig = sig_q or sig
    items = p.items
    key = ctx.auth.verify(api_key, items.get("timestamp") or None, sig, b2,
                          items.get("recvWindow") or None, read=read_of(method, path),
                          conn=conn)
    require(key, permission)
    ctx.key_limiter.hit(key.key)
    return key


# ---------------------------------------------------------------- symbols and shapes

def rate_limits(ctx: Context) -> list[dict[str, Any]]:
    """The gateway's own token buckets in Binance's shape, so a client that paces itself from
    ``exchangeInfo`` paces to the limits this server enforces. Every request costs 1 per client
    IP (``REQUEST_WEIGHT``); every signed request counts against its API key, orders included
    (``ORDERS``, Binance's closest type). Binance counts whole requests per interval, so a
    fractional rate is given per minute (or per day). A disabled bucket is left out."""
    out: list[dict[str, Any]] = []
    for kind, lim in (("REQUEST_WEIGHT", ctx.ip_limiter), ("ORDERS", ctx.key_limiter)):
        if not lim.enabled:
            continue
        for interval, seconds in (("SECOND", 1), ("MINUTE", 60), ("DAY", 86_400)):
            per = lim.rate * seconds
            if per == int(per) or interval == "DAY":
                break
        out.append({"rateLimitType": kind, "interval": interval, "intervalNum": 1,
                    "limit": max(1, int(per))})
    return out


def _is_perp(m: Market) -> bool:
    return m.kind != "spot"


class Symbols:
    """Binance symbol <-> market name, per surface (spot markets on /api, perps on /fapi)."""

    #: (symbol, perp) -> market record, for ``lookup``; every hit is checked against the engine
    _known: dict[tuple[str, bool], Market] = {}

    @classmethod
    def lookup(cls, engine: Engine, symbol: str | None, perp: bool) -> Market:
        """``Symbols(engine).market(symbol, perp)`` without building the maps per request
        (order entry): a remembered market is used only while it is still the engine's record
        under its name (a market's symbol and kind never change within one record); otherwise
        the maps are built afresh."""
        if symbol is not None:  # remembered as sent: only symbols in upper case, as given
            m = cls._known.get((symbol, perp))
            if m is not None and engine.markets.get(m.market) is m:
                return m
        m = cls(engine).market(symbol, perp)
        cls._known[(bsym(m), perp)] = m
        return m

    def __init__(self, engine: Engine) -> None:
        self.spot: dict[str, Market] = {}
        self.perp: dict[str, Market] = {}
        for m in engine.markets.values():
            (self.perp if _is_perp(m) else self.spot)[bsym(m)] = m

    def market(self, symbol: str | None, perp: bool) -> Market:
        if symbol is None:
            raise _missing("symbol")
        m = (self.perp if perp else self.spot).get(symbol.upper())
        if m is None:
            raise BinanceError(-1121, "Invalid symbol.")
        return m


def bsym(m: Market) -> str:
    return m.base + m.quote


def _order_type(r: OrderRecord, perp: bool) -> str:
    if r.order_type == "market":
        return "MARKET"
    if r.post_only and not perp:
        return "LIMIT_MAKER"
    return "LIMIT"


def _tif(r: OrderRecord, perp: bool) -> str:
    if perp and r.post_only:
        return "GTX"
    return r.tif


#: the core's STP modes as Binance names them
_STP_NAMES = {mode: mode.upper() for mode in STP_MODES}
_BSIDES = {"buy": "BUY", "sell": "SELL"}


class _Zeros(dict[int, str]):
    """``"0.00..."`` with n decimals: the zero fields of an order, one lookup each."""

    def __missing__(self, decimals: int) -> str:
        self[decimals] = text = from_units(0, decimals)
        return text


_ZERO = _Zeros()


def stp_mode(engine: Engine, r: OrderRecord, is_open: bool) -> str:
    """The self-trade prevention mode that applies to an order: its own if it set one (known
    while it rests), else its account's."""
    order = engine.orders.get(r.order_id) if is_open else None
    mode = order.stp if order is not None else None
    if mode is None:
        acct = engine.accounts.get(r.account)
        mode = acct.stp if acct is not None else DEFAULT_STP
    return _STP_NAMES.get(mode) or str(mode).upper()


def order_json(u: V.Units, m: Market, r: OrderRecord, perp: bool,
               fills: list[E.Trade] | None = None, *, engine: Engine) -> dict[str, Any]:
    """``fills``: the order's trades at placement (it was their taker), from the command's
    own events. One dict literal per surface (order entry renders one per order), with as
    few calls as the fields allow."""
    zero_price = _ZERO[u.price_dp]
    price = u.price(r.price) if r.order_type == "limit" else zero_price
    executed = u.qty(r.filled)
    quote = u.quote_amount(r.filled_quote)
    otype = _order_type(r, perp)
    is_open = r.is_open
    if perp:
        return {
            "symbol": m.base + m.quote, "orderId": r.order_id, "clientOrderId": r.client_id,
            "price": price, "origQty": u.qty(r.qty), "executedQty": executed,
            "status": _STATUS[r.status], "timeInForce": _tif(r, perp), "type": otype,
            "side": _BSIDES[r.side], "time": r.created_ts, "updateTime": r.updated_ts,
            "avgPrice": u.avg_price(r.filled_quote, r.filled) or zero_price,
            "cumQty": executed, "cumQuote": quote, "reduceOnly": r.reduce_only,
            "closePosition": False, "positionSide": "BOTH", "stopPrice": "0",
            "workingType": "CONTRACT_PRICE", "priceProtect": False, "origType": otype,
            "priceMatch": "NONE", "selfTradePreventionMode": stp_mode(engine, r, is_open),
            "goodTillDate": 0}
    out: dict[str, Any] = {
        "symbol": m.base + m.quote, "orderId": r.order_id, "clientOrderId": r.client_id,
        "price": price, "origQty": u.qty(r.qty), "executedQty": executed,
        "status": _STATUS[r.status], "timeInForce": r.tif, "type": otype,
        "side": _BSIDES[r.side], "time": r.created_ts, "updateTime": r.updated_ts,
        "orderListId": -1, "cummulativeQuoteQty": quote, "stopPrice": zero_price,
        "icebergQty": _ZERO[u.base_dp], "isWorking": is_open, "workingTime": r.created_ts,
        "origQuoteOrderQty": _ZERO[u.quote_dp],
        "selfTradePreventionMode": stp_mode(engine, r, is_open)}
    if fills is not None:
        out["transactTime"] = r.updated_ts
        if fills:
            out["fills"] = [{"price": u.price(f.price), "qty": u.qty(f.qty),
                             "commission": u.quote_amount(f.taker_fee),
                             "commissionAsset": u.quote, "tradeId": f.trade_id} for f in fills]
        else:
            out["fills"] = []
    return out


def _filters(u: V.Units, m: Market, perp: bool) -> list[dict[str, Any]]:
    max_price = u.price(10**15)
    out: list[dict[str, Any]] = [
        {"filterType": "PRICE_FILTER", "minPrice": trim(u.price(m.tick_size)),
         "maxPrice": trim(max_price), "tickSize": trim(u.price(m.tick_size))},
        {"filterType": "LOT_SIZE", "minQty": trim(u.qty(m.min_qty)),
         "maxQty": trim(u.qty(m.max_qty)), "stepSize": trim(u.qty(m.lot_size))},
        {"filterType": "MARKET_LOT_SIZE", "minQty": trim(u.qty(m.min_qty)),
         "maxQty": trim(u.qty(m.max_qty)), "stepSize": trim(u.qty(m.lot_size))},
    ]
    notional = trim(u.quote_amount(m.min_notional))
    if perp:
        out.append({"filterType": "MIN_NOTIONAL", "notional": notional})
    else:
        out.append({"filterType": "NOTIONAL", "minNotional": notional,
                    "applyMinToMarket": True, "maxNotional": "9000000000.00000000",
                    "applyMaxToMarket": False, "avgPriceMins": 5})
    return out


def _rates(maker_ppm: int, taker_ppm: int) -> dict[str, str]:
    """Binance's ``commissionRates``: fractions with 8 decimals (1 ppm = 0.000001)."""
    return {"maker": from_units(maker_ppm * 100, 8), "taker": from_units(taker_ppm * 100, 8),
            "buyer": from_units(0, 8), "seller": from_units(0, 8)}


def _decimals_of_step(step: str) -> int:
    return len(step.split(".", 1)[1]) if "." in step else 0


def _percent(ppm: int) -> str:
    """A rate in ppm as Binance's 4-decimal percent string (50_000 ppm -> "5.0000")."""
    return from_units(ppm, 4)


def symbol_info(engine: Engine, m: Market, perp: bool) -> dict[str, Any]:
    u = V.Units(engine, m)
    tiers = engine.perp.markets[m.market].tiers if perp else []
    status = _MODE_STATUS.get(m.mode, "BREAK")
    info: dict[str, Any] = {
        "symbol": bsym(m), "status": status, "baseAsset": m.base,
        "baseAssetPrecision": u.base_dp, "quoteAsset": u.quote, "quotePrecision": u.quote_dp,
        "quoteAssetPrecision": u.quote_dp, "filters": _filters(u, m, perp),
    }
    if perp:
        info.update({
            "pair": bsym(m), "contractType": "PERPETUAL", "deliveryDate": 4133404800000,
            "onboardDate": 0, "contractStatus": status, "marginAsset": u.quote,
            "maintMarginPercent": _percent(tiers[0].mmr_ppm),
            "requiredMarginPercent": _percent(PPM // tiers[0].max_leverage),
            "pricePrecision": m.price_decimals,
            "quantityPrecision": _decimals_of_step(trim(u.qty(m.lot_size))),
            "underlyingType": "COIN", "underlyingSubType": [], "settlePlan": 0,
            "triggerProtect": "0.0500", "liquidationFee": "0.005000",
            "marketTakeBound": "0.05", "orderTypes": ["LIMIT", "MARKET"],
            "timeInForce": ["GTC", "IOC", "FOK", "GTX"]})
    else:
        info.update({
            "baseCommissionPrecision": u.base_dp, "quoteCommissionPrecision": u.quote_dp,
            "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"], "icebergAllowed": False,
            "ocoAllowed": False, "otoAllowed": False, "quoteOrderQtyMarketAllowed": True,
            "allowTrailingStop": False, "cancelReplaceAllowed": False,
            "isSpotTradingAllowed": True, "isMarginTradingAllowed": False,
            "permissions": ["SPOT"], "permissionSets": [["SPOT"]],
            "defaultSelfTradePreventionMode": str(DEFAULT_STP).upper(),
            "allowedSelfTradePreventionModes": sorted(m.upper() for m in STP_MODES)})
    return info


def ticker_24h(gw: Gateway, m: Market, perp: bool) -> dict[str, Any]:
    """Binance's 24-hour rolling ticker of one market (REST ``ticker/24hr`` and the
    ``@ticker`` stream)."""
    e = gw.engine
    u = V.Units(e, m)
    book = e.books[m.market]
    bid = book.bids.best()
    ask = book.asks.best()
    now = now_ms()
    st = gw.readmodel.stats_24h(m.market, now)
    last = m.last_price
    open_ = st.open if st else last
    change = last - open_ if last else 0
    pct = f"{change * 100 / open_:.3f}" if open_ else "0.000"
    wavg = (u.avg_price(st.quote_volume, st.volume) if st else None) or u.price(last)
    trades = gw.readmodel.recent_trades(m.market, 1)
    data: dict[str, Any] = {
        "symbol": bsym(m), "priceChange": u.price(change) if change >= 0
        else "-" + u.price(-change), "priceChangePercent": pct, "weightedAvgPrice": wavg,
        "lastPrice": u.price(last), "lastQty": u.qty(trades[-1].qty) if trades
        else u.qty(0), "openPrice": u.price(open_),
        "highPrice": u.price(st.high if st else last),
        "lowPrice": u.price(st.low if st else last),
        "volume": u.qty(st.volume if st else 0),
        "quoteVolume": u.quote_amount(st.quote_volume if st else 0),
        "openTime": now - 86_400_000, "closeTime": now,
        "firstId": -1, "lastId": trades[-1].trade_id if trades else -1,
        "count": st.trades if st else 0}
    if not perp:
        lv = book.bids.levels.get(bid) if bid is not None else None
        la = book.asks.levels.get(ask) if ask is not None else None
        data.update({"prevClosePrice": u.price(open_),
                     "bidPrice": u.price(bid or 0), "bidQty": u.qty(lv.qty if lv else 0),
                     "askPrice": u.price(ask or 0), "askQty": u.qty(la.qty if la else 0)})
    return data


#: Binance side / order type / time in force as sent -> ours; anything else is upper-cased
#: first (as Binance's own matching is case-insensitive for these), then refused if unknown
_SIDES: dict[str, Literal["buy", "sell"]] = {"BUY": "buy", "SELL": "sell"}
_TYPES = frozenset(("LIMIT", "MARKET", "LIMIT_MAKER"))
_TIFS = frozenset(("GTC", "IOC", "FOK", "GTX"))


def order_command(gw: Gateway, key: ApiKey, p: Params, perp: bool
                  ) -> tuple[Market, V.Units, C.PlaceOrder]:
    """An order's Binance parameters as the core's command (shared by ``order`` and
    ``order/test``), with the market and its units (to render the answer). Reads the
    parameter map directly: this runs once per order."""
    get = p.items.get
    m = Symbols.lookup(gw.engine, get("symbol") or None, perp)
    u = V.market_units(gw.engine, m)
    raw = get("side")
    if not raw:
        raise _missing("side")
    side = _SIDES.get(raw) or _SIDES.get(raw.upper())
    if side is None:
        raise BinanceError(-1117, "Invalid side.")
    otype = get("type")
    if not otype:
        raise _missing("type")
    if otype not in _TYPES:
        otype = otype.upper()
    tif = get("timeInForce") or "GTC"
    if tif not in _TIFS:
        tif = tif.upper()
    post_only = False
    if otype == "LIMIT_MAKER" and not perp:
        otype, post_only, tif = "LIMIT", True, "GTC"
    if perp and tif == "GTX":
        post_only, tif = True, "GTC"
    if otype != "LIMIT" and otype != "MARKET":
        raise BinanceError(-1116, "Invalid orderType.")
    if tif != "GTC" and tif != "IOC" and tif != "FOK":
        raise BinanceError(-1130, "Data sent for parameter 'timeInForce' is not valid.")
    reduce_only = p.flag("reduceOnly") if "reduceOnly" in p.items else False
    if reduce_only and not perp:
        raise BinanceError(-1106, "Parameter 'reduceOnly' sent when not required.")
    qty_text = get("quantity")
    price = 0
    if otype == "LIMIT":
        price_text = get("price")
        if not price_text:
            raise _missing("price")
        price = to_units(price_text, u.price_dp, X.INVALID_PRICE, "price")
    if not qty_text and otype == "MARKET" and side == "buy" and not perp:
        qty = _quote_to_qty(gw.engine, m, p.req("quoteOrderQty"))
    elif not qty_text:
        raise _missing("quantity")
    else:
        qty = to_units(qty_text, u.base_dp, X.INVALID_QUANTITY, "quantity")
    cid = get("newClientOrderId") or ""
    if len(cid) > 64:
        raise BinanceError(-1130, "Data sent for parameter 'newClientOrderId' is not "
                                  "valid.")
    stp = get("selfTradePreventionMode") or None
    if stp is not None:
        stp = stp.lower()
        if stp not in STP_MODES:
            raise BinanceError(-1130, "Data sent for parameter "
                                      "'selfTradePreventionMode' is not valid.")
    return m, u, C.PlaceOrder(account=key.account, market=m.market, side=side, qty=qty,
                              price=price, order_type="limit" if otype == "LIMIT" else "market",
                              tif=tif if otype == "LIMIT" else "IOC",  # type: ignore[arg-type]
                              post_only=post_only, client_id=cid,
                              stp=stp, reduce_only=reduce_only)  # type: ignore[arg-type]


async def place(gw: Gateway, key: ApiKey, p: Params, perp: bool) -> dict[str, Any]:
    """``POST /api/v3/order`` and ``/fapi/v1/order`` after authentication: parse, place through
    the gateway's one order entry, render (spot fills from the command's own trades)."""
    m, u, cmd = order_command(gw, key, p, perp)
    placed = await gw.place(cmd)
    return order_json(u, m, placed.order, perp, None if perp else placed.trades(),
                      engine=gw.engine)


# ---------------------------------------------------------------- routes

def routes(ctx: Context) -> list[BaseRoute]:
    gw = ctx.gateway

    def guarded(fn: Callable[[Request], Awaitable[Response]]) -> Handler:
        async def handler(request: Request) -> Response:
            try:
                return await fn(request)
            except (ApiError, BinanceError) as err:
                return error_response(err)
        return handler

    def symbols() -> Symbols:
        return Symbols(gw.engine)

    # ------------------------------------------------------------ public

    async def ping(request: Request) -> Response:
        return J({})

    async def server_time(request: Request) -> Response:
        return J({"serverTime": now_ms()})

    def exchange_info(perp: bool) -> Handler:
        async def handler(request: Request) -> Response:
            e = gw.engine
            syms = [symbol_info(e, m, perp) for _, m in sorted(e.markets.items())
                    if _is_perp(m) == perp]
            data: dict[str, Any] = {"timezone": "UTC", "serverTime": now_ms(),
                                    "rateLimits": rate_limits(ctx), "exchangeFilters": [],
                                    "symbols": syms}
            if perp:
                data["assets"] = [{"asset": a, "marginAvailable": True,
                                   "autoAssetExchange": "0"}
                                  for a in sorted({m.quote for m in e.markets.values()
                                                   if _is_perp(m)})]
            return J(data)
        return handler

    async def dapi_exchange_info(request: Request) -> Response:
        return J({"timezone": "UTC", "serverTime": now_ms(), "rateLimits": rate_limits(ctx),
                  "exchangeFilters": [], "symbols": []})

    def depth(perp: bool) -> Handler:
        async def handler(request: Request) -> Response:
            p, _, _ = await read_params(request)
            m = symbols().market(p.opt("symbol"), perp)
            limit = p.int("limit", 100, 1, 5000)
            u = V.Units(gw.engine, m)
            mirror = gw.books.mirror(m.market)
            bids, asks = mirror.snapshot(limit) if mirror else ([], [])
            data: dict[str, Any] = {
                "lastUpdateId": mirror.seq if mirror else gw.engine.seq,
                "bids": [[u.price(px), u.qty(q)] for px, q in bids],
                "asks": [[u.price(px), u.qty(q)] for px, q in asks]}
            if perp:
                data["E"] = data["T"] = now_ms()
            return J(data)
        return handler

    def price_ticker(perp: bool) -> Handler:
        async def handler(request: Request) -> Response:
            p, _, _ = await read_params(request)
            syms = symbols()
            e = gw.engine

            def row(m: Market) -> dict[str, Any]:
                out: dict[str, Any] = {"symbol": bsym(m),
                                       "price": V.Units(e, m).price(m.last_price)}
                if perp:
                    out["time"] = now_ms()
                return out
            sym = p.opt("symbol")
            if sym is not None:
                return J(row(syms.market(sym, perp)))
            table = syms.perp if perp else syms.spot
            wanted = _symbol_list(p.opt("symbols"))
            if wanted is not None:
                return J([row(syms.market(s, perp)) for s in wanted])
            return J([row(m) for _, m in sorted(table.items())])
        return handler

    async def avg_price(request: Request) -> Response:
        """Volume-weighted price of the last 5 minutes' trades (the last price if none)."""
        p, _, _ = await read_params(request)
        m = symbols().market(p.opt("symbol"), False)
        u = V.Units(gw.engine, m)
        now = now_ms()
        rows = gw.readmodel.klines(m.market, 60_000, 5, now - 5 * 60_000 + 1, now, now=now)
        qty = sum(c.volume for c in rows)
        quote = sum(c.quote_volume for c in rows)
        last = gw.readmodel.recent_trades(m.market, 1)
        return J({"mins": 5, "price": u.avg_price(quote, qty) or u.price(m.last_price),
                  "closeTime": last[-1].ts if last else now})

    def ticker(perp: bool) -> Handler:
        async def handler(request: Request) -> Response:
            p, _, _ = await read_params(request)
            syms = symbols()
            sym = p.opt("symbol")
            if sym is None:
                table = syms.perp if perp else syms.spot
                return J([ticker_24h(gw, m, perp) for _, m in sorted(table.items())])
            return J(ticker_24h(gw, syms.market(sym, perp), perp))
        return handler

    def book_ticker(perp: bool) -> Handler:
        async def handler(request: Request) -> Response:
            p, _, _ = await read_params(request)
            syms = symbols()

            def one(m: Market) -> dict[str, Any]:
                e = gw.engine
                u = V.Units(e, m)
                book = e.books[m.market]
                bid, ask = book.bids.best(), book.asks.best()
                lv = book.bids.levels.get(bid) if bid is not None else None
                la = book.asks.levels.get(ask) if ask is not None else None
                return {"symbol": bsym(m), "bidPrice": u.price(bid or 0),
                        "bidQty": u.qty(lv.qty if lv else 0), "askPrice": u.price(ask or 0),
                        "askQty": u.qty(la.qty if la else 0), "time": now_ms()}

            sym = p.opt("symbol")
            if sym is None:
                table = syms.perp if perp else syms.spot
                return J([one(m) for _, m in sorted(table.items())])
            return J(one(syms.market(sym, perp)))
        return handler

    def agg_trades(perp: bool) -> Handler:
        async def handler(request: Request) -> Response:
            p, _, _ = await read_params(request)
            m = symbols().market(p.opt("symbol"), perp)
            limit = p.int("limit", 500, 1, 1000) or 500
            start = p.int("startTime")
            end = p.int("endTime")
            u = V.Units(gw.engine, m)
            trades = gw.readmodel.recent_trades(m.market, 1000)
            if start is not None:
                trades = [t for t in trades if t.ts >= start]
            if end is not None:
                trades = [t for t in trades if t.ts <= end]
            trades = trades[:limit] if start is not None else trades[-limit:]
            return J([{"a": t.trade_id, "p": u.price(t.price), "q": u.qty(t.qty),
                       "f": t.trade_id, "l": t.trade_id, "T": t.ts,
                       "m": t.taker_side == "sell", "M": True} for t in trades])
        return handler

    def recent_trades(perp: bool) -> Handler:
        async def handler(request: Request) -> Response:
            p, _, _ = await read_params(request)
            m = symbols().market(p.opt("symbol"), perp)
            limit = p.int("limit", 500, 1, 1000) or 500
            u = V.Units(gw.engine, m)
            return J([{"id": t.trade_id, "price": u.price(t.price), "qty": u.qty(t.qty),
                       "quoteQty": u.quote_amount(t.price * t.qty // u.price_div),
                       "time": t.ts, "isBuyerMaker": t.taker_side == "sell",
                       "isBestMatch": True}
                      for t in gw.readmodel.recent_trades(m.market, limit)])
        return handler

    def klines(perp: bool) -> Handler:
        async def handler(request: Request) -> Response:
            p, _, _ = await read_params(request)
            m = symbols().market(p.opt("symbol"), perp)
            interval = p.req("interval")
            if interval not in INTERVALS:
                raise BinanceError(-1120, "Invalid interval.")
            step = INTERVALS[interval]
            limit = p.int("limit", 500, 1, 1500) or 500
            u = V.Units(gw.engine, m)
            rows = gw.readmodel.klines(m.market, step, limit, p.int("startTime"),
                                       p.int("endTime"), now=now_ms())
            return J([[c.start, u.price(c.open), u.price(c.high), u.price(c.low),
                       u.price(c.close), u.qty(c.volume), c.start + step - 1,
                       u.quote_amount(c.quote_volume), c.trades, u.qty(0),
                       u.quote_amount(0), "0"] for c in rows])
        return handler

    # ------------------------------------------------------------ private

    async def signed(request: Request, permission: str) -> tuple[ApiKey, Params]:
        p, qs, body = await read_params(request)
        key = authenticate(ctx, request, qs, body, p, permission)
        return key, p

    def new_order(perp: bool) -> Handler:
        async def handler(request: Request) -> Response:
            key, p = await signed(request, "trade")
            return J(await place(gw, key, p, perp))
        return handler

    def test_order(perp: bool) -> Handler:
        async def handler(request: Request) -> Response:
            """Validate an order as the core would (filters, mode, prices), place nothing."""
            key, p = await signed(request, "trade")
            m, _, cmd = order_command(gw, key, p, perp)
            try:
                order_terms(gw.engine, m, cmd)
            except Refused as exc:
                raise api_error(exc, gw.engine, cmd) from None
            if p.flag("computeCommissionRates"):
                rates = _rates(m.maker_fee_ppm, m.taker_fee_ppm)
                return J({"standardCommissionForOrder": rates,
                          "taxCommissionForOrder": _rates(0, 0),
                          "discount": {"enabledForAccount": False, "enabledForSymbol": False,
                                       "discountAsset": "BNB", "discount": from_units(0, 8)}})
            return J({})
        return handler

    def _lookup(key: ApiKey, p: Params, m: Market) -> OrderRecord:
        oid = p.int("orderId")
        cid = p.opt("origClientOrderId")
        if oid is None and cid is None:
            raise BinanceError(-1102, "Either orderId or origClientOrderId must be sent.")
        rec = gw.readmodel.order(key.account, oid) if oid is not None else \
            gw.readmodel.order_by_client(key.account, cid or "")
        if rec is None or rec.market != m.market:
            raise BinanceError(-2013, "Order does not exist.")
        return rec

    def get_order(perp: bool) -> Handler:
        async def handler(request: Request) -> Response:
            key, p = await signed(request, "read")
            m = symbols().market(p.opt("symbol"), perp)
            rec = _lookup(key, p, m)
            return J(order_json(V.Units(gw.engine, m), m, rec, perp, engine=gw.engine))
        return handler

    def cancel_order(perp: bool) -> Handler:
        async def handler(request: Request) -> Response:
            key, p = await signed(request, "trade")
            m = symbols().market(p.opt("symbol"), perp)
            try:
                rec = _lookup(key, p, m)
            except BinanceError:
                raise BinanceError(-2011, "Unknown order sent.") from None
            rec = (await gw.cancel(key.account, order_id=rec.order_id, market=m.market)).order
            out = order_json(V.Units(gw.engine, m), m, rec, perp, engine=gw.engine)
            out["origClientOrderId"] = rec.client_id
            return J(out)
        return handler

    def cancel_all(perp: bool) -> Handler:
        async def handler(request: Request) -> Response:
            key, p = await signed(request, "trade")
            m = symbols().market(p.opt("symbol"), perp)
            recs = (await gw.cancel_all(key.account, m.market)).orders
            u = V.Units(gw.engine, m)
            if perp:
                return J({"code": 200, "msg": "The operation of cancel all open order is done."})
            return J([order_json(u, m, r, perp, engine=gw.engine) | {"origClientOrderId": r.client_id}
                      for r in recs])
        return handler

    def open_orders(perp: bool) -> Handler:
        async def handler(request: Request) -> Response:
            key, p = await signed(request, "read")
            syms = symbols()
            sym = p.opt("symbol")
            e = gw.engine
            wanted = [syms.market(sym, perp)] if sym else list(
                (syms.perp if perp else syms.spot).values())
            out: list[dict[str, Any]] = []
            for m in wanted:
                u = V.Units(e, m)
                recs = sorted(gw.readmodel.open_orders(key.account, m.market),
                              key=lambda r: r.order_id)
                out.extend(order_json(u, m, r, perp, engine=gw.engine) for r in recs)
            return J(out)
        return handler

    def all_orders(perp: bool) -> Handler:
        async def handler(request: Request) -> Response:
            key, p = await signed(request, "read")
            m = symbols().market(p.opt("symbol"), perp)
            limit = p.int("limit", 500, 1, 1000) or 500
            start, end = p.int("startTime"), p.int("endTime")
            since_id = p.int("orderId")
            recs = gw.readmodel.all_orders(key.account, m.market)
            if since_id is not None:
                recs = [r for r in recs if r.order_id >= since_id]
            if start is not None:
                recs = [r for r in recs if r.created_ts >= start]
            if end is not None:
                recs = [r for r in recs if r.created_ts <= end]
            recs = recs[:limit] if (start is not None or since_id is not None) else recs[-limit:]
            u = V.Units(gw.engine, m)
            return J([order_json(u, m, r, perp, engine=gw.engine) for r in recs])
        return handler

    def my_trades(perp: bool) -> Handler:
        async def handler(request: Request) -> Response:
            key, p = await signed(request, "read")
            m = symbols().market(p.opt("symbol"), perp)
            limit = p.int("limit", 500, 1, 1000) or 500
            start, end = p.int("startTime"), p.int("endTime")
            from_id = p.int("fromId")
            oid = p.int("orderId")
            fills = gw.readmodel.fills(key.account, m.market)
            if oid is not None:
                fills = [f for f in fills if f.order_id == oid]
            if from_id is not None:
                fills = [f for f in fills if f.trade_id >= from_id]
            if start is not None:
                fills = [f for f in fills if f.ts >= start]
            if end is not None:
                fills = [f for f in fills if f.ts <= end]
            fills = fills[:limit] if (start is not None or from_id is not None) \
                else fills[-limit:]
            u = V.Units(gw.engine, m)
            if perp:
                return J([{"symbol": bsym(m), "id": f.trade_id, "orderId": f.order_id,
                           "side": "BUY" if f.is_buyer else "SELL", "price": u.price(f.price),
                           "qty": u.qty(f.qty), "quoteQty": u.quote_amount(f.quote_qty),
                           "realizedPnl": perps.amount(f.realized, u.quote_dp),
                           "commission": u.quote_amount(f.fee), "commissionAsset": u.quote,
                           "time": f.ts, "positionSide": "BOTH", "buyer": f.is_buyer,
                           "maker": f.is_maker} for f in fills])
            return J([{"symbol": bsym(m), "id": f.trade_id, "orderId": f.order_id,
                       "orderListId": -1, "price": u.price(f.price), "qty": u.qty(f.qty),
                       "quoteQty": u.quote_amount(f.quote_qty),
                       "commission": u.quote_amount(f.fee), "commissionAsset": u.quote,
                       "time": f.ts, "isBuyer": f.is_buyer, "isMaker": f.is_maker,
                       "isBestMatch": True} for f in fills])
        return handler

    async def account(request: Request) -> Response:
        key, p = await signed(request, "read")
        e = gw.engine
        acct = e.accounts.get(key.account)
        balances = []
        if acct is not None:
            for asset in sorted(set(acct.available) | set(acct.held)):
                dp = e.assets[asset].decimals
                balances.append({"asset": asset,
                                 "free": from_units(acct.available.get(asset, 0), dp),
                                 # order holds plus funds held for pending withdrawals
                                 "locked": from_units(acct.held.get(asset, 0)
                                                      + e.wallet.held_of(key.account, asset),
                                                      dp)})
        perms = key.permissions
        spot = [m for m in e.markets.values() if not _is_perp(m)]
        maker = max((m.maker_fee_ppm for m in spot), default=0)
        taker = max((m.taker_fee_ppm for m in spot), default=0)
        return J({"makerCommission": maker // 100, "takerCommission": taker // 100,
                  "buyerCommission": 0, "sellerCommission": 0,
                  "commissionRates": _rates(maker, taker),
                  "canTrade": "trade" in perms, "canWithdraw": "withdraw" in perms,
                  "canDeposit": True, "brokered": False, "requireSelfTradePrevention": False,
                  "preventSor": False, "updateTime": now_ms(), "accountType": "SPOT",
                  "balances": balances, "permissions": ["SPOT"], "uid": key.account})

    def commission(perp: bool) -> Handler:
        async def handler(request: Request) -> Response:
            _, p = await signed(request, "read")
            m = symbols().market(p.opt("symbol"), perp)
            if perp:
                return J({"symbol": bsym(m),
                          "makerCommissionRate": from_units(m.maker_fee_ppm, 6),
                          "takerCommissionRate": from_units(m.taker_fee_ppm, 6)})
            zero = from_units(0, 8)
            return J({"symbol": bsym(m),
                      "standardCommission": _rates(m.maker_fee_ppm, m.taker_fee_ppm),
                      "taxCommission": _rates(0, 0),
                      "discount": {"enabledForAccount": False, "enabledForSymbol": False,
                                   "discountAsset": "BNB", "discount": zero}})
        return handler

    async def empty_list(request: Request) -> Response:
        await signed(request, "read")
        return J([])

    # ------------------------------------------------------------ perpetual-only

    async def fapi_account(request: Request) -> Response:
        key, p = await signed(request, "read")
        return J(perps.binance_account(ctx, key.account))

    async def fapi_balance(request: Request) -> Response:
        key, p = await signed(request, "read")
        return J(perps.binance_balances(ctx, key.account))

    def one_way_setting(name: str, field: str, what: str) -> Handler:
        """Hedge mode and multi-asset margin are not offered: reading answers the one mode
        Bastion has, asking for it again succeeds, asking for the other is refused."""
        async def handler(request: Request) -> Response:
            if request.method == "GET":
                await signed(request, "read")
                return J({field: False})
            key, p = await signed(request, "trade")
            if p.flag(name):
                raise BinanceError(-1130, f"Data sent for parameter '{name}' is not valid "
                                          f"({what} is not supported; it is always off).")
            if p.opt(name) is None:
                raise _missing(name)
            return J({"code": 200, "msg": "success"})
        return handler

    async def margin_type(request: Request) -> Response:
        """Cross margin is the only mode: asking for it answers Binance's -4046 "No need to
        change margin type." (which ccxt and freqtrade treat as success), isolated is
        refused."""
        key, p = await signed(request, "trade")
        symbols().market(p.opt("symbol"), True)
        wanted = p.req("marginType").upper()
        if wanted in ("CROSSED", "CROSS"):
            raise BinanceError(-4046, "No need to change margin type.")
        raise BinanceError(-1130, "Data sent for parameter 'marginType' is not valid "
                                  "(isolated margin is not supported; margin is cross).")

    async def position_risk(request: Request) -> Response:
        key, p = await signed(request, "read")
        sym = p.opt("symbol")
        syms = symbols()
        markets = [syms.market(sym, True)] if sym else list(syms.perp.values())
        return J(perps.binance_positions(ctx, key.account, markets))

    async def premium_index(request: Request) -> Response:
        p, _, _ = await read_params(request)
        syms = symbols()
        sym = p.opt("symbol")
        if sym is None:
            return J([perps.binance_premium(ctx, m) for _, m in sorted(syms.perp.items())])
        return J(perps.binance_premium(ctx, syms.market(sym, True)))

    async def funding_rate(request: Request) -> Response:
        p, _, _ = await read_params(request)
        syms = symbols()
        sym = p.opt("symbol")
        markets = [syms.market(sym, True)] if sym else list(syms.perp.values())
        limit = p.int("limit", 100, 1, 1000) or 100
        return J(perps.binance_funding_history(ctx, markets, limit))

    async def leverage_bracket(request: Request) -> Response:
        key, p = await signed(request, "read")
        sym = p.opt("symbol")
        syms = symbols()
        if sym:
            return J(perps.binance_brackets(ctx, [syms.market(sym, True)]))
        return J(perps.binance_brackets(ctx, [m for _, m in sorted(syms.perp.items())]))

    async def set_leverage(request: Request) -> Response:
        key, p = await signed(request, "trade")
        m = symbols().market(p.opt("symbol"), True)
        lev = p.int("leverage", None, 1, 1000)
        if lev is None:
            raise BinanceError(-1102, "Mandatory parameter 'leverage' was not sent.")
        return J(await perps.binance_set_leverage(ctx, key.account, m, lev))

    def R(path: str, fn: Handler, *methods: str) -> Route:
        return Route(path, guarded(fn), methods=list(methods) or ["GET"])

    out: list[BaseRoute] = []
    for prefix, perp in (("/api/v3", False), ("/fapi/v1", True)):
        out += [
            R(f"{prefix}/ping", ping),
            R(f"{prefix}/time", server_time),
            R(f"{prefix}/exchangeInfo", exchange_info(perp)),
            R(f"{prefix}/depth", depth(perp)),
            R(f"{prefix}/ticker/24hr", ticker(perp)),
            R(f"{prefix}/ticker/bookTicker", book_ticker(perp)),
            R(f"{prefix}/ticker/price", price_ticker(perp)),
            R(f"{prefix}/order/test", test_order(perp), "POST"),
            R(f"{prefix}/aggTrades", agg_trades(perp)),
            R(f"{prefix}/trades", recent_trades(perp)),
            R(f"{prefix}/klines", klines(perp)),
            R(f"{prefix}/order", new_order(perp), "POST"),
            R(f"{prefix}/order", get_order(perp), "GET"),
            R(f"{prefix}/order", cancel_order(perp), "DELETE"),
            R(f"{prefix}/openOrders", open_orders(perp), "GET"),
            R(f"{prefix}/allOrders", all_orders(perp), "GET"),
        ]
    out += [
        R("/api/v3/openOrders", cancel_all(False), "DELETE"),
        R("/fapi/v1/allOpenOrders", cancel_all(True), "DELETE"),
        R("/api/v3/myTrades", my_trades(False)),
        R("/fapi/v1/userTrades", my_trades(True)),
        R("/api/v3/account", account),
        R("/api/v3/account/commission", commission(False)),
        R("/fapi/v1/commissionRate", commission(True)),
        R("/fapi/v2/account", fapi_account),
        R("/fapi/v3/account", fapi_account),
        R("/fapi/v2/balance", fapi_balance),
        R("/fapi/v3/balance", fapi_balance),
        R("/fapi/v2/positionRisk", position_risk),
        R("/fapi/v3/positionRisk", position_risk),
        R("/fapi/v1/premiumIndex", premium_index),
        R("/fapi/v1/fundingRate", funding_rate),
        R("/fapi/v1/leverage", set_leverage, "POST"),
        R("/fapi/v1/leverageBracket", leverage_bracket),
        R("/fapi/v2/ticker/price", price_ticker(True)),
        R("/api/v3/avgPrice", avg_price),
        R("/fapi/v1/marginType", margin_type, "POST"),
        R("/fapi/v1/positionSide/dual",
          one_way_setting("dualSidePosition", "dualSidePosition", "hedge mode"), "GET", "POST"),
        R("/fapi/v1/multiAssetsMargin",
          one_way_setting("multiAssetsMargin", "multiAssetsMargin", "multi-assets margin"),
          "GET", "POST"),
        R("/dapi/v1/exchangeInfo", dapi_exchange_info),
        R("/sapi/v1/margin/allPairs", empty_list),
        R("/sapi/v1/margin/isolated/allPairs", empty_list),
    ]
    return out


def _symbol_list(text: str | None) -> list[str] | None:
    """Binance's ``symbols=["BTCUSDT","ETHUSDT"]`` parameter."""
    if text is None:
        return None
    try:
        names = msgspec.json.decode(text)
    except msgspec.DecodeError:
        names = None
    if not isinstance(names, list) or not names or len(names) > 100 \
            or not all(isinstance(n, str) for n in names):
        raise BinanceError(-1100, "Illegal characters found in parameter 'symbols'.")
    return names


def _quote_to_qty(engine: Engine, m: Market, quote_text: str) -> int:
    """A spot market buy for a quote amount (``quoteOrderQty``): the base quantity that amount
    buys at the best ask, rounded down to the lot (the engine then clips to funds)."""
    u = V.Units(engine, m)
    quote = to_units(quote_text, u.quote_dp, X.INVALID_AMOUNT, "quoteOrderQty")
    ask = engine.books[m.market].asks.best()
    if ask is None:
        raise ApiError(X.NO_LIQUIDITY, f"no asks in {m.market}")
    qty = quote * m.price_div // ask // m.lot_size * m.lot_size
    if qty <= 0:
        raise ApiError(X.MIN_QUANTITY, "quoteOrderQty buys less than one lot")
    return qty

