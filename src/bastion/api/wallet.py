"""Withdrawals and deposits over HTTP, on every surface:

- native: ``POST/GET /v1/withdrawals``, ``GET/DELETE /v1/withdrawals/{id}``,
  ``GET /v1/deposits``, ``GET /v1/deposit-address?asset=``;
- Binance-compatible (what unmodified ccxt ``withdraw``, ``fetch_withdrawals``,
  ``fetch_deposits``, ``fetch_deposit_address``, ``fetch_currencies`` and ``fetch_status``
  call): ``/sapi/v1/capital/...`` and ``/sapi/v1/system/status``;
- operator: queue view, approve/reject, pause/resume, rules (``/admin/withdrawals...``).

Every change is a journaled core command; the answers read the engine's wallet, so
``withdrawEnable`` and the like are the pipeline's real state, never a constant. Bad input
is refused here (address format per asset, decimals, unknown asset) before anything is held.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bastion.api import errors as A
from bastion.api.app_context import Context
from bastion.api.binance import rest as B
from bastion.api.convert import from_units, to_units
from bastion.api.errors import ApiError
from bastion.api.http import JSON, Handler, Handlers, admin, authenticate, decode
from bastion.api.native import schemas as S
from bastion.api.service.outcomes import Withdrawn
from bastion.core import commands as C
from bastion.core import errors as X
from bastion.core.wallet import state as W
from bastion.core.wallet.desk import Wallet
from bastion.custody.addresses import address_problem

#: Binance withdraw-history status codes (ccxt maps 0/2/4 pending, 1 canceled, 3/5 failed, 6 ok)
_BINANCE_STATUS = {W.REQUESTED: 2, W.RISK_REVIEW: 2, W.APPROVED: 4, W.SUBMITTED: 4,
                   W.CONFIRMED: 6, W.FAILED: 5, W.CANCELLED: 1, W.REJECTED: 3}
MAX_LIST = 1000


class Decision(msgspec.Struct, forbid_unknown_fields=True):
    reason: str = ""


class PauseRequest(msgspec.Struct, forbid_unknown_fields=True):
    asset: str
    reason: str


class RulesRequest(msgspec.Struct, forbid_unknown_fields=True):
    asset: str
    min_amount: str
    fee: str = "0"
    daily_limit: str = "0"
    manual_above: str = "0"
    address_delay_ms: int = 0
    confirmations: int = 1
    reason: str = ""


def _iso(ts_ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts_ms / 1000))


class DepositView(msgspec.Struct):
    """A deposit as its owner sees it: confirming (n of N) until credited."""

    txid: str
    asset: str
    address: str
    amount: str
    confirmations: int
    required: int
    state: Literal["confirming", "credited"]
    detected_ms: int
    credited_ms: int | None


class DepositAddress(msgspec.Struct):
    asset: str
    address: str


class AssetQueue(msgspec.Struct):
    """One asset's withdrawal lane: queue depth and age, operator pause, the custody breaker
    (``worker``: None where no worker runs beside this process)."""

    depth: int
    oldest_age_ms: int
    by_state: dict[str, int]
    paused: bool
    pause_reason: str
    paused_by: str
    worker: dict[str, Any] | None


class WithdrawalQueue(msgspec.Struct):
    assets: dict[str, AssetQueue]
    custody: str | None
    open: list[S.WithdrawalView]


class WalletService:
    """Use cases shared by the three surfaces, on parsed values."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.gw = ctx.gateway

    @property
    def wallet(self) -> Wallet:
        return self.gw.engine.wallet

    def rules(self, asset: object) -> W.AssetRules:
        rules = self.wallet.rules.get(asset) if isinstance(asset, str) else None
        if rules is None:
            raise ApiError(X.UNKNOWN_ASSET, f"unknown asset {asset!r} (or no withdrawals for it)",
                           status=400)
        return rules

    def decimals(self, asset: str) -> int:
        return self.gw.asset_decimals(asset)

    async def request(self, account: int, asset: str, amount_text: object, address: object,
                      client_id: str) -> Withdrawn:
        """Validate at the edge (asset, address format, decimals, client id), then
        ``Gateway.withdraw``: a repeated client id answers with the first withdrawal."""
        self.rules(asset)
        problem = address_problem(asset, address)
        if problem:
            raise ApiError(X.INVALID_ADDRESS, problem, status=400)
        amount = to_units(amount_text, self.decimals(asset), X.INVALID_AMOUNT, "amount")
        if len(client_id) > 64 or not (client_id.isascii() and client_id.isprintable()):
            raise ApiError(A.MALFORMED_REQUEST, "client_id must be at most 64 printable ASCII "
                                                "characters")
        assert isinstance(address, str)
        return await self.gw.withdraw(account, asset, amount, address, client_id)

    def find(self, wid_text: str) -> W.Withdrawal | None:
        """The withdrawal with this id (ASCII digits only), or None."""
        if not (wid_text.isascii() and wid_text.isdigit() and len(wid_text) < 19):
            return None
        found: W.Withdrawal | None = self.wallet.withdrawals.get(int(wid_text))
        return found

    def own(self, account: int, wid_text: str) -> W.Withdrawal:
        w = self.find(wid_text)
        if w is None or w.account != account:
            raise ApiError(X.UNKNOWN_WITHDRAWAL, f"no withdrawal {wid_text[:40]!r}", status=404)
        return w

    def withdrawals_of(self, account: int, asset: str | None, limit: int
                       ) -> list[W.Withdrawal]:
        wallet = self.wallet
        out = []
        for wid in reversed(wallet.by_account.get(account, [])):
            w = wallet.withdrawals[wid]
            if asset is None or w.asset == asset:
                out.append(w)
                if len(out) >= limit:
                    break
        return out

    def deposits_of(self, account: int, asset: str | None, limit: int
                    ) -> list[W.DepositRecord]:
        wallet = self.wallet
        out = []
        for txid in reversed(wallet.deposits_by_account.get(account, [])):
            d = wallet.deposits[txid]
            if asset is None or d.asset == asset:
                out.append(d)
                if len(out) >= limit:
                    break
        return out

    async def deposit_address(self, account: int, asset: str) -> str:
        """The account's address for `asset`: issued by custody once, then journaled."""
        self.rules(asset)
        address: str | None = self.wallet.account_addresses.get((account, asset))
        if address is not None:
            return address
        pipeline = self.ctx.extra.get("withdrawals")
        client = getattr(pipeline, "client", None)
        if client is None:
            raise ApiError(A.UNAVAILABLE, "no custody connection: deposit addresses cannot be "
                                          "issued right now")
        from bastion.custody.client import CustodyRejected, CustodyUnavailable

        try:
            address = await client.new_address(asset, f"acct-{account}")
        except (CustodyUnavailable, CustodyRejected) as exc:
            raise ApiError(A.UNAVAILABLE, f"custody could not issue an address: {exc}") from None
        try:
            await self.gw.submit(C.AssignDepositAddress(account=account, asset=asset,
                                                        address=address))
        except ApiError as err:
            if err.code != X.NO_CHANGE:  # a concurrent request assigned it first
                raise
        return str(self.wallet.account_addresses[(account, asset)])

    def view(self, w: W.Withdrawal) -> S.WithdrawalView:
        dp = self.decimals(w.asset)
        return S.WithdrawalView(id=str(w.wid), client_id=w.client_id, asset=w.asset,
                                amount=from_units(w.amount, dp), fee=from_units(w.fee, dp),
                                address=w.address, state=w.state, txid=w.txid,
                                reason=w.reason, created_ms=w.created_ts,
                                updated_ms=w.updated_ts)

    def deposit_view(self, d: W.DepositRecord) -> DepositView:
        return DepositView(txid=d.txid, asset=d.asset, address=d.address,
                           amount=from_units(d.amount, self.decimals(d.asset)),
                           confirmations=d.confirmations, required=d.required,
                           state="credited" if d.credited else "confirming",
                           detected_ms=d.first_ts, credited_ms=d.credited_ts or None)

    def queue_view(self) -> WithdrawalQueue:
        """Per asset: depth, oldest age, pause, breaker; and every open withdrawal."""
        wallet = self.wallet
        now = int(time.time() * 1000)
        pipeline = self.ctx.extra.get("withdrawals")
        worker = getattr(pipeline, "worker", None)
        assets = {}
        for asset, rules in sorted(wallet.rules.items()):
            queued = [w for w in wallet.open.values() if w.asset == asset]
            assets[asset] = AssetQueue(
                depth=len(queued),
                oldest_age_ms=now - queued[0].created_ts if queued else 0,
                by_state={s: sum(1 for w in queued if w.state == s)
                          for s in sorted(W.OPEN_STATES)},
                paused=rules.paused, pause_reason=rules.pause_reason,
                paused_by=rules.paused_by,
                worker=worker.lane_view(asset) if worker is not None else None,
            )
        return WithdrawalQueue(assets=assets, custody=getattr(pipeline, "custody_url", None),
                               open=[self.view(w) for w in wallet.open.values()])


def handlers(ctx: Context) -> Handlers:
    """The native and operator handlers the route table (``bastion.api.routes``) mounts."""
    h = Handlers("wallet")
    svc = WalletService(ctx)
    gw = ctx.gateway

    # ------------------------------------------------------------ native

    @h
    async def create(request: Request) -> Response:
        body = await request.body()
        key = authenticate(ctx, request, body, "withdraw")
        req = decode(body, S.Withdraw)
        out = await svc.request(key.account, req.asset, req.amount, req.address,
                                req.client_id or "")
        return JSON(svc.view(out.withdrawal), status_code=200 if out.duplicate else 201)

    @h
    async def list_withdrawals(request: Request) -> Response:
        key = authenticate(ctx, request, b"", "read")
        asset = request.query_params.get("asset")
        return JSON([svc.view(w) for w in svc.withdrawals_of(key.account, asset, MAX_LIST)])

    @h
    async def get_withdrawal(request: Request) -> Response:
        key = authenticate(ctx, request, b"", "read")
        return JSON(svc.view(svc.own(key.account, request.path_params["wid"])))

    @h
    async def cancel_withdrawal(request: Request) -> Response:
        key = authenticate(ctx, request, b"", "withdraw")
        w = svc.own(key.account, request.path_params["wid"])
        await gw.submit(C.CancelWithdrawal(account=key.account, wid=w.wid))
        return JSON(svc.view(w))

    @h
    async def list_deposits(request: Request) -> Response:
        key = authenticate(ctx, request, b"", "read")
        asset = request.query_params.get("asset")
        return JSON([svc.deposit_view(d) for d in svc.deposits_of(key.account, asset,
                                                                  MAX_LIST)])

    @h
    async def deposit_address(request: Request) -> Response:
        key = authenticate(ctx, request, b"", "read")
        asset = request.query_params.get("asset", "")
        return JSON(DepositAddress(asset=asset,
                                   address=await svc.deposit_address(key.account, asset)))

    # ------------------------------------------------------------ operator

    @h
    async def queue(request: Request) -> Response:
        admin(ctx, request)
        return JSON(svc.queue_view())

    def review(approve: bool) -> Handler:
        async def handler(request: Request) -> Response:
            admin(ctx, request)
            body = await request.body()
            req = decode(body, Decision) if body else Decision()
            w = svc.find(request.path_params["wid"])
            if w is None:
                raise ApiError(X.UNKNOWN_WITHDRAWAL, "no such withdrawal", status=404)
            await gw.submit(C.ReviewWithdrawal(wid=w.wid, approve=approve, operator="admin",
                                               reason=req.reason))
            return JSON(svc.view(w))
        return handler

    def pause(paused: bool) -> Handler:
        async def handler(request: Request) -> Response:
            admin(ctx, request)
            req = decode(await request.body(), PauseRequest)
            svc.rules(req.asset)
            await gw.submit(C.PauseWithdrawals(asset=req.asset, paused=paused,
                                               reason=req.reason, by="operator"))
            return JSON(svc.queue_view().assets[req.asset])
        return handler

    @h
    async def set_rules(request: Request) -> Response:
        admin(ctx, request)
        req = decode(await request.body(), RulesRequest)
        dp = gw.asset_decimals(req.asset)

        def units(text: str, what: str) -> int:
            return to_units(text, dp, X.INVALID_AMOUNT, what, allow_zero=True)

        await gw.submit(C.SetWithdrawalRules(
            asset=req.asset, min_amount=units(req.min_amount, "min_amount"),
            fee=units(req.fee, "fee"), daily_limit=units(req.daily_limit, "daily_limit"),
            manual_above=units(req.manual_above, "manual_above"),
            address_delay_ms=req.address_delay_ms, confirmations=req.confirmations,
            reason=req.reason))
        return JSON(svc.queue_view().assets[req.asset])

    h.add("approve", review(True))
    h.add("reject", review(False))
    h.add("pause", pause(True))
    h.add("resume", pause(False))
    return h


def binance_routes(ctx: Context) -> list[BaseRoute]:
    """The Binance-compatible ``/sapi`` wallet routes (Binance's paths, not in the native
    route table)."""
    svc = WalletService(ctx)

    # ------------------------------------------------------------ Binance-compatible

    async def b_apply(request: Request) -> Response:
        key, p = await _signed(ctx, request, "withdraw")
        coin = p.req("coin")
        network = p.opt("network")
        if network is not None and network != coin:
            raise B.BinanceError(-4019, f"network {network} is not supported for {coin}")
        if p.opt("addressTag") is not None:
            raise B.BinanceError(-4006, "addressTag is not used by these networks")
        out = await svc.request(key.account, coin, p.req("amount"), p.req("address"),
                                p.opt("withdrawOrderId") or "")
        return B.J({"id": str(out.withdrawal.wid)})

    async def b_history(request: Request) -> Response:
        key, p = await _signed(ctx, request, "read")
        coin = p.opt("coin")
        cid = p.opt("withdrawOrderId")
        start, end = p.int("startTime", 0), p.int("endTime", 2**62)
        offset = p.int("offset", 0, 0, 10**6) or 0
        limit = p.int("limit", MAX_LIST, 1, MAX_LIST) or MAX_LIST
        status = p.int("status", None, 0, 6)
        rows = [w for w in svc.withdrawals_of(key.account, coin, 10**6)
                if (cid is None or w.client_id == cid)
                and (status is None or _BINANCE_STATUS[w.state] == status)
                and (start or 0) <= w.created_ts <= (end or 2**62)]
        return B.J([_binance_withdrawal(svc, w) for w in rows[offset:offset + limit]])

    async def b_deposits(request: Request) -> Response:
        key, p = await _signed(ctx, request, "read")
        coin = p.opt("coin")
        start, end = p.int("startTime", 0), p.int("endTime", 2**62)
        offset = p.int("offset", 0, 0, 10**6) or 0
        limit = p.int("limit", MAX_LIST, 1, MAX_LIST) or MAX_LIST
        rows = [d for d in svc.deposits_of(key.account, coin, 10**6)
                if (start or 0) <= d.first_ts <= (end or 2**62)]
        return B.J([_binance_deposit(svc, d) for d in rows[offset:offset + limit]])

    async def b_address(request: Request) -> Response:
        key, p = await _signed(ctx, request, "read")
        coin = p.req("coin")
        address = await svc.deposit_address(key.account, coin)
        return B.J({"coin": coin, "address": address, "tag": "", "url": ""})

    async def b_config(request: Request) -> Response:
        key, _ = await _signed(ctx, request, "read")
        return B.J(_binance_currencies(svc, key.account))

    async def b_system_status(request: Request) -> Response:
        return B.J(system_status(ctx))

    def R(path: str, fn: Handler, *methods: str) -> Route:
        return Route(path, _binance_guarded(fn), methods=list(methods) or ["GET"])

    return [
        R("/sapi/v1/capital/withdraw/apply", b_apply, "POST"),
        R("/sapi/v1/capital/withdraw/history", b_history),
        R("/sapi/v1/capital/deposit/hisrec", b_deposits),
        R("/sapi/v1/capital/deposit/address", b_address),
        R("/sapi/v1/capital/config/getall", b_config),
        R("/sapi/v1/system/status", b_system_status),
    ]


async def _signed(ctx: Context, request: Request, permission: str) -> tuple[Any, B.Params]:
    p, qs, body = await B.read_params(request)
    return B.authenticate(ctx, request, qs, body, p, permission), p


def _binance_guarded(fn: Handler) -> Handler:
    async def handler(request: Request) -> Response:
        try:
            return await fn(request)
        except (ApiError, B.BinanceError) as err:
            return B.error_response(err)
    return handler


def _binance_withdrawal(svc: WalletService, w: W.Withdrawal) -> dict[str, Any]:
    dp = svc.decimals(w.asset)
    row: dict[str, Any] = {
        "id": str(w.wid), "amount": from_units(w.amount, dp),
        "transactionFee": from_units(w.fee, dp), "coin": w.asset,
        "status": _BINANCE_STATUS[w.state], "address": w.address, "txId": w.txid,
        "applyTime": _iso(w.created_ts), "network": w.asset, "transferType": 0,
        "info": w.reason, "confirmNo": 0, "walletType": 0}
    if w.client_id:
        row["withdrawOrderId"] = w.client_id
    if w.state in W.FINAL_STATES:
        row["completeTime"] = _iso(w.updated_ts)
    return row


def _binance_deposit(svc: WalletService, d: W.DepositRecord) -> dict[str, Any]:
    return {"id": d.txid[:32], "amount": from_units(d.amount, svc.decimals(d.asset)),
            "coin": d.asset, "network": d.asset, "status": 1 if d.credited else 0,
            "address": d.address, "addressTag": "", "txId": d.txid, "insertTime": d.first_ts,
            "transferType": 0, "confirmTimes": f"{min(d.confirmations, d.required)}/"
                                                 f"{d.required}",
            "unlockConfirm": 0, "walletType": 0}


def _binance_currencies(svc: WalletService, account: int) -> list[dict[str, Any]]:
    """fetch_currencies: withdrawEnable/depositEnable from the wallet's real pause state."""
    engine = svc.gw.engine
    acct = engine.accounts.get(account)
    out = []
    for name, asset in sorted(engine.assets.items()):
        dp = asset.decimals
        rules = svc.wallet.rules.get(name)
        withdraw_on = rules is not None and not rules.paused
        deposit_on = rules is not None
        held = svc.wallet.held.get((account, name), 0)
        free = acct.available.get(name, 0) if acct else 0
        locked = acct.held.get(name, 0) if acct else 0
        network = {
            "network": name, "coin": name, "name": name, "isDefault": True,
            "depositEnable": deposit_on, "withdrawEnable": withdraw_on,
            "depositDesc": "" if deposit_on else "deposits are not enabled for this asset",
            "withdrawDesc": "" if withdraw_on else (
                f"withdrawals paused: {rules.pause_reason}" if rules else "not enabled"),
            "withdrawFee": from_units(rules.fee if rules else 0, dp),
            "withdrawMin": from_units(rules.min_amount if rules else 0, dp),
            "withdrawMax": from_units(rules.daily_limit or 2**62 if rules else 0, dp),
            "withdrawIntegerMultiple": from_units(1, dp), "minConfirm":
                rules.confirmations if rules else 0, "unLockConfirm": 0,
            "busy": bool(rules and rules.paused), "sameAddress": False,
            "addressRegex": "", "memoRegex": "", "specialTips": ""}
        out.append({"coin": name, "name": name, "depositAllEnable": deposit_on,
                    "withdrawAllEnable": withdraw_on, "free": from_units(free, dp),
                    "locked": from_units(locked, dp), "freeze": "0",
                    "withdrawing": from_units(held, dp), "ipoing": "0", "ipoable": "0",
                    "storage": "0", "isLegalMoney": False, "trading": True,
                    "networkList": [network]})
    return out


def system_status(ctx: Context) -> dict[str, Any]:
    """Binance ``/sapi/v1/system/status``: 1 (maintenance) while the node has failed, a
    maintenance is in progress, or any market is halted or closed; else 0."""
    gw = ctx.gateway
    reasons = []
    failure = getattr(gw.node, "failure", None)
    if failure is not None:
        reasons.append(f"node stopped: {failure}")
    status = ctx.extra.get("status")
    if status is not None:
        from bastion.status.statuspage import active_maintenances

        reasons += [f"maintenance: {m.name}" for m in active_maintenances(status.view())]
    for name, mkt in sorted(gw.engine.markets.items()):
        if mkt.mode in ("halted", "closed"):
            reasons.append(f"{name} {mkt.mode}")
    if reasons:
        return {"status": 1, "msg": "system_maintenance", "detail": "; ".join(reasons)}
    return {"status": 0, "msg": "normal"}
