"""Operator endpoints (``/admin``): deposits, market modes and metadata, reference prices, API
keys, and the engine's health (state hash, invariants).

They take only ``Authorization: Bearer <BASTION_ADMIN_TOKEN>``; a trading key, signed or not,
is never accepted. Every state change here is a journaled command like any order, so it is in
the audit trail and replays identically.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from bastion.api import errors as A
from bastion.api.app_context import Context
from bastion.api.convert import to_units
from bastion.api.errors import ApiError
from bastion.api.http import JSON, Handlers, admin, decode
from bastion.api.native import schemas as S
from bastion.api.native import views as V
from bastion.core import commands as C
from bastion.core import errors as X
from bastion.core import events as E
from bastion.ops.migrations.spec import MigrationError, parse_migration, to_command
from bastion.textnum import ascii_int


def _accepted(events: list[E.Event]) -> S.Accepted:
    import msgspec

    seq = events[0].seq if events else 0
    return S.Accepted(seq=seq, events=[msgspec.to_builtins(e) for e in events])


def handlers(ctx: Context) -> Handlers:
    """The handlers the route table (``bastion.api.routes``) mounts."""
    h = Handlers("admin")
    gw = ctx.gateway

    @h
    async def deposit(request: Request) -> Response:
        admin(ctx, request)
        req = decode(await request.body(), S.AdminDeposit)
        dp = gw.asset_decimals(req.asset)
        amount = to_units(req.amount, dp, X.INVALID_AMOUNT, "amount")
        events = await gw.submit(C.Deposit(account=req.account, asset=req.asset, amount=amount,
                                           reason=req.reason))
        return JSON(_accepted(events), status_code=201)

    @h
    async def set_mode(request: Request) -> Response:
        admin(ctx, request)
        mkt = gw.market(request.path_params["market"])
        req = decode(await request.body(), S.AdminMode)
        events = await gw.submit(C.SetMarketMode(market=mkt.market, mode=req.mode,
                                                 reason=req.reason, until_ts=req.until_ms))
        return JSON(_accepted(events))

    @h
    async def update_market(request: Request) -> Response:
        admin(ctx, request)
        mkt = gw.market(request.path_params["market"])
        req = decode(await request.body(), S.AdminMarketUpdate)
        u = V.Units(gw.engine, mkt)

        def price(v: str | None, what: str) -> int | None:
            return None if v is None else to_units(v, u.price_dp, X.INVALID_ARGUMENT, what)

        def qty(v: str | None, what: str) -> int | None:
            return None if v is None else to_units(v, u.base_dp, X.INVALID_ARGUMENT, what)

        cmd = C.UpdateMarket(
            market=mkt.market, tick_size=price(req.tick_size, "tick_size"),
            lot_size=qty(req.lot_size, "lot_size"), min_qty=qty(req.min_qty, "min_qty"),
            max_qty=qty(req.max_qty, "max_qty"),
            min_notional=None if req.min_notional is None else to_units(
                req.min_notional, u.quote_dp, X.INVALID_ARGUMENT, "min_notional",
                allow_zero=True),
            maker_fee_ppm=req.maker_fee_ppm, taker_fee_ppm=req.taker_fee_ppm,
            market_band_bps=req.market_band_bps, ref_band_bps=req.ref_band_bps,
            reason=req.reason)
        events = await gw.submit(cmd)
        return JSON(_accepted(events))

    @h
    async def reference_price(request: Request) -> Response:
        admin(ctx, request)
        mkt = gw.market(request.path_params["market"])
        req = decode(await request.body(), S.AdminReferencePrice)
        u = V.Units(gw.engine, mkt)
        events = await gw.submit(C.SetReferencePrice(
            market=mkt.market, price=to_units(req.price, u.price_dp, X.INVALID_PRICE, "price")))
        return JSON(_accepted(events))

    @h
    async def create_key(request: Request) -> Response:
        admin(ctx, request)
        req = decode(await request.body(), S.AdminKey)
        if not req.permissions:
            raise ApiError(A.MALFORMED_REQUEST, "give at least one permission")
        key, secret = await ctx.keys.put(req.account, frozenset(req.permissions), label=req.label)
        return JSON(S.ApiKeyCreated(key=key.key, secret=secret, account=key.account,
                                    permissions=sorted(key.permissions)), status_code=201)

    @h
    async def change_key(request: Request) -> Response:
        """New permissions apply at once, also to WebSockets the key has open."""
        admin(ctx, request)
        req = decode(await request.body(), S.AdminKeyPermissions)
        if not req.permissions:
            raise ApiError(A.MALFORMED_REQUEST, "give at least one permission")
        key = await ctx.keys.set_permissions(request.path_params["key"], frozenset(req.permissions))
        if key is None:
            raise ApiError(A.NOT_FOUND, "no such key")
        return JSON(S.ApiKeyInfo(key=key.key, account=key.account,
                                 permissions=sorted(key.permissions)))

    @h
    async def revoke_key(request: Request) -> Response:
        admin(ctx, request)
        if not await ctx.keys.revoke(request.path_params["key"]):
            raise ApiError(A.NOT_FOUND, "no such key")
        return Response(status_code=204)

    @h
    async def health(request: Request) -> Response:
        admin(ctx, request)
        e = gw.engine
        problems = e.check_invariants()
        return JSON(S.Health(seq=e.seq, state_hash=e.state_hash(), invariants_ok=not problems,
                             problems=problems[:50]))

    @h
    async def account(request: Request) -> Response:
        admin(ctx, request)
        raw = request.path_params["account"]
        acct = ascii_int(raw, max_digits=18)
        if acct is None:
            raise ApiError(X.UNKNOWN_ACCOUNT, "account must be a positive integer")
        if acct not in gw.engine.accounts:
            raise ApiError(X.UNKNOWN_ACCOUNT, f"unknown account {acct}")
        rm = gw.readmodel
        e = gw.engine
        return JSON(S.AccountView(
            account=acct, balances=V.balances(e, acct),
            open_orders=[V.order(V.units(e, r.market), r) for r in rm.open_orders(acct)]))

    @h
    async def book(request: Request) -> Response:
        """The engine's own full L2 book (tests compare the public feed against it)."""
        admin(ctx, request)
        mkt = gw.market(request.path_params["market"])
        u = V.Units(gw.engine, mkt)
        bids, asks = gw.engine.books[mkt.market].depth(1_000_000)
        return JSON(S.Book(market=mkt.market, seq=gw.engine.seq,
                           bids=[(u.price(p), u.qty(q)) for p, q in bids],
                           asks=[(u.price(p), u.qty(q)) for p, q in asks]))

    @h
    async def apply_migration(request: Request) -> Response:
        """The body is the migration file itself (TOML); ``?dry_run=`` records what the
        operator's dry-run found (or that it was skipped) in the journaled command."""
        admin(ctx, request)
        try:
            mig = parse_migration(await request.body(), source="request body")
        except MigrationError as exc:
            raise ApiError(exc.code, f"{exc.field}: {exc.message}" if exc.field
                           else exc.message) from None
        cmd = to_command(mig)
        cmd.dry_run = request.query_params.get("dry_run", "not reported")[:200]
        events = await gw.submit(cmd)
        return JSON(_accepted(events), status_code=201)

    @h
    async def rollback_migration(request: Request) -> Response:
        admin(ctx, request)
        req = decode(await request.body(), S.AdminMigrationRollback)
        events = await gw.submit(C.RollbackMigration(
            migration_id=request.path_params["migration"], reason=req.reason))
        return JSON(_accepted(events))

    @h
    async def migrations(request: Request) -> Response:
        admin(ctx, request)
        log = gw.engine.migrations
        return JSON(S.Migrations(seq=gw.engine.seq, records=log.records, pending=log.pending))

    return h
