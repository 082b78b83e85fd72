"""Native REST API (``/v1``): orders, fills, balances, positions, markets, book, trades, time.

Requests and responses are the msgspec Structs in ``schemas``; money crosses this boundary
only as decimal strings converted exactly by ``convert``. Private routes are signed (see
``auth``); public market data is not.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from bastion.api import errors as A
from bastion.api.app_context import Context
from bastion.api.convert import to_units
from bastion.api.errors import ApiError
from bastion.api.http import JSON, Handlers, authenticate, decode, int_param, now_ms, path_int
from bastion.api.native import perps
from bastion.api.native import schemas as S
from bastion.api.native import views as V
from bastion.api.read.model import ReadModel
from bastion.core import commands as C
from bastion.core import errors as X
from bastion.core.engine import Engine

INTERVALS = S.INTERVALS
#: ``POST`` here is order entry, served by the Guard ahead of the router (``fastpath``)
PLACE_PATH = "/v1/orders"


def place_command(engine: Engine, account: int, req: S.PlaceOrder) -> C.PlaceOrder:
    """Validate the edge-only rules and convert decimals; the core checks the rest."""
    mkt = engine.markets.get(req.market)
    if mkt is None:
        raise ApiError(X.UNKNOWN_MARKET, f"unknown market {req.market!r}")
    u = V.market_units(engine, mkt)
    qty = to_units(req.quantity, u.base_dp, X.INVALID_QUANTITY, "quantity")
    if req.type == "limit":
        if req.price is None:
            raise ApiError(X.INVALID_PRICE, "a limit order needs a price")
        price = to_units(req.price, u.price_dp, X.INVALID_PRICE, "price")
    else:
        if req.price is not None:
            raise ApiError(X.INVALID_ARGUMENT, "a market order takes no price")
        if req.post_only:
            raise ApiError(X.INVALID_ARGUMENT, "a market order cannot be post-only")
        price = 0
    if req.reduce_only and mkt.kind == "spot":
        raise ApiError(X.INVALID_ARGUMENT, "reduce_only applies to perpetual markets only")
    kwargs: dict[str, Any] = {}
    if req.reduce_only:
        kwargs["reduce_only"] = True
    return C.PlaceOrder(account=account, market=req.market, side=req.side, qty=qty, price=price,
                        order_type=req.type, tif=req.time_in_force, post_only=req.post_only,
                        client_id=req.client_order_id or "", **kwargs)


def handlers(ctx: Context) -> Handlers:
    """The handlers the route table (``bastion.api.routes``) mounts."""
    h = Handlers("native")
    gw = ctx.gateway

    def eng() -> Engine:
        return gw.engine

    def rm() -> ReadModel:
        return gw.readmodel

    # ------------------------------------------------------------ public

    @h
    async def server_time(request: Request) -> Response:
        return JSON(S.ServerTime(server_time=now_ms()))

    @h
    async def markets(request: Request) -> Response:
        e = eng()
        return JSON([V.market_info(e, m) for _, m in sorted(e.markets.items())])

    @h
    async def market(request: Request) -> Response:
        return JSON(V.market_info(eng(), gw.market(request.path_params["market"])))

    @h
    async def book(request: Request) -> Response:
        mkt = gw.market(request.path_params["market"])
        depth = int_param(request, "depth", 50, 1, 5000)
        mirror = gw.books.mirror(mkt.market)
        u = V.Units(eng(), mkt)
        if mirror is None:
            return JSON(S.Book(market=mkt.market, seq=eng().seq, bids=[], asks=[]))
        bids, asks = mirror.snapshot(depth)
        return JSON(S.Book(market=mkt.market, seq=mirror.seq,
                           bids=[(u.price(p), u.qty(q)) for p, q in bids],
                           asks=[(u.price(p), u.qty(q)) for p, q in asks]))

    @h
    async def trades(request: Request) -> Response:
        mkt = gw.market(request.path_params["market"])
        limit = int_param(request, "limit", 100, 1, 1000)
        u = V.Units(eng(), mkt)
        return JSON([S.PublicTrade(trade_id=t.trade_id, market=t.market, price=u.price(t.price),
                                   quantity=u.qty(t.qty), taker_side=t.taker_side, ts=t.ts)
                     for t in reversed(rm().recent_trades(mkt.market, limit))])

    @h
    async def ticker(request: Request) -> Response:
        mkt = gw.market(request.path_params["market"])
        return JSON(ticker_view(ctx, mkt.market))

    @h
    async def candles(request: Request) -> Response:
        mkt = gw.market(request.path_params["market"])
        interval = request.query_params.get("interval", "1m")
        if interval not in INTERVALS:
            raise ApiError(A.MALFORMED_REQUEST, f"interval must be one of {', '.join(INTERVALS)}")
        limit = int_param(request, "limit", 500, 1, 1000)
        u = V.Units(eng(), mkt)
        return JSON([S.Candle(start=c.start, open=u.price(c.open), high=u.price(c.high),
                              low=u.price(c.low), close=u.price(c.close), volume=u.qty(c.volume),
                              quote_volume=u.quote_amount(c.quote_volume), trades=c.trades)
                     for c in rm().klines(mkt.market, INTERVALS[interval], limit,
                                         now=now_ms())])

    # ------------------------------------------------------------ private: orders

    @h
    async def list_orders(request: Request) -> Response:
        key = authenticate(ctx, request, b"", "read")
        market = request.query_params.get("market")
        if market is not None:
            gw.market(market)
        status = request.query_params.get("status", "all")
        if status not in ("open", "all"):
            raise ApiError(A.MALFORMED_REQUEST, "status must be open or all")
        limit = int_param(request, "limit", 500, 1, 10_000)
        recs = (rm().open_orders(key.account, market) if status == "open"
                else rm().all_orders(key.account, market))
        recs.sort(key=lambda r: r.order_id)
        e = eng()
        return JSON([V.order(V.units(e, r.market), r) for r in recs[-limit:]])

    @h
    async def open_orders(request: Request) -> Response:
        key = authenticate(ctx, request, b"", "read")
        market = request.query_params.get("market")
        if market is not None:
            gw.market(market)
        e = eng()
        recs = sorted(rm().open_orders(key.account, market), key=lambda r: r.order_id)
        return JSON([V.order(V.units(e, r.market), r) for r in recs])

    @h
    async def get_order(request: Request) -> Response:
        key = authenticate(ctx, request, b"", "read")
        rec = gw.own_order(key.account, order_id=path_int(request, "order_id"))
        return JSON(V.order(V.units(eng(), rec.market), rec))

    @h
    async def get_order_by_client(request: Request) -> Response:
        key = authenticate(ctx, request, b"", "read")
        rec = gw.own_order(key.account, client_id=request.path_params["client_id"])
        return JSON(V.order(V.units(eng(), rec.market), rec))

    @h
    async def amend(request: Request) -> Response:
        body = await request.body()
        key = authenticate(ctx, request, body, "trade")
        req = decode(body, S.AmendOrder)
        oid = path_int(request, "order_id")
        rec = gw.own_order(key.account, order_id=oid)
        u = V.units(eng(), rec.market)
        if req.price is None and req.quantity is None:
            raise ApiError(X.NO_CHANGE, "give a new price and/or quantity")
        price = None if req.price is None else to_units(req.price, u.price_dp, X.INVALID_PRICE,
                                                        "price")
        qty = None if req.quantity is None else to_units(req.quantity, u.base_dp,
                                                         X.INVALID_QUANTITY, "quantity")
        out = await gw.amend(key.account, oid, None, price, qty)
        return JSON(V.order(u, out.order))

    @h
    async def cancel(request: Request) -> Response:
        key = authenticate(ctx, request, b"", "trade")
        out = await gw.cancel(key.account, order_id=path_int(request, "order_id"))
        return JSON(V.order(V.units(eng(), out.order.market), out.order))

    @h
    async def cancel_by_client(request: Request) -> Response:
        key = authenticate(ctx, request, b"", "trade")
        out = await gw.cancel(key.account, client_id=request.path_params["client_id"])
        return JSON(V.order(V.units(eng(), out.order.market), out.order))

    @h
    async def cancel_all(request: Request) -> Response:
        key = authenticate(ctx, request, b"", "trade")
        market = request.query_params.get("market")
        out = await gw.cancel_all(key.account, market)
        e = eng()
        return JSON(S.CancelAllResult(canceled=[V.order(V.units(e, r.market), r)
                                                for r in out.orders]))

    # ------------------------------------------------------------ private: account

    @h
    async def fills(request: Request) -> Response:
        key = authenticate(ctx, request, b"", "read")
        market = request.query_params.get("market")
        if market is not None:
            gw.market(market)
        limit = int_param(request, "limit", 500, 1, 10_000)
        e = eng()
        return JSON([V.fill(V.units(e, f.market), f)
                     for f in rm().fills(key.account, market)[-limit:]])

    @h
    async def balances(request: Request) -> Response:
        key = authenticate(ctx, request, b"", "read")
        return JSON(V.balances(eng(), key.account))

    @h
    async def positions(request: Request) -> Response:
        key = authenticate(ctx, request, b"", "read")
        return JSON(position_views(ctx, key.account))

    @h
    async def margin(request: Request) -> Response:
        key = authenticate(ctx, request, b"", "read")
        return JSON(perps.margins(ctx, key.account))

    @h
    async def transfer_margin(request: Request) -> Response:
        body = await request.body()
        key = authenticate(ctx, request, body, "trade")
        req = decode(body, S.MarginTransfer)
        dp = gw.asset_decimals(req.asset)
        amount = to_units(req.amount, dp, X.INVALID_AMOUNT, "amount")
        out = await gw.transfer_margin(key.account, req.asset, amount, req.direction == "add")
        return JSON(perps.margin_changed(ctx, out))

    @h
    async def leverage(request: Request) -> Response:
        body = await request.body()
        key = authenticate(ctx, request, body, "trade")
        req = decode(body, S.Leverage)
        gw.market(req.market)
        out = await gw.set_leverage(key.account, req.market, req.leverage)
        return JSON(perps.leverage_set(ctx, req.market, out))

    @h
    async def funding(request: Request) -> Response:
        mkt = gw.market(request.path_params["market"])
        return JSON(perps.funding(ctx, mkt))

    return h


def ticker_view(ctx: Context, market: str) -> S.Ticker:
    gw = ctx.gateway
    e = gw.engine
    mkt = e.markets[market]
    u = V.Units(e, mkt)
    book = e.books[market]
    bid = book.bids.best()
    ask = book.asks.best()
    now = now_ms()
    st = gw.readmodel.stats_24h(market, now)
    return S.Ticker(
        market=market, last=u.price(mkt.last_price) if mkt.last_price else None,
        bid=u.price(bid) if bid is not None else None,
        ask=u.price(ask) if ask is not None else None,
        open_24h=u.price(st.open) if st else None, high_24h=u.price(st.high) if st else None,
        low_24h=u.price(st.low) if st else None,
        volume_24h=u.qty(st.volume if st else 0),
        quote_volume_24h=u.quote_amount(st.quote_volume if st else 0), ts=now)


def position_views(ctx: Context, account: int) -> list[S.Position]:
    return perps.positions(ctx, account)
