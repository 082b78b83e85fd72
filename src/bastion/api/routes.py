"""The one route table of the native API (``/v1``) and the operator API (``/admin``).

Each ``Op`` names its method, path, handler, permission, summary, request and response types
and the error codes it can answer. The router (``mount``), ``/openapi.json``
(``bastion.api.openapi``) and so the Swagger UI at ``/docs`` are all built from this list;
there is no second list to keep in step. The Binance-compatible surface follows Binance's own
documentation and is mounted by its module.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from starlette.routing import Route

from bastion.api import errors as A
from bastion.api import wallet as Wt
from bastion.api.http import Handler
from bastion.api.native import schemas as S
from bastion.api.native.routes import PLACE_PATH
from bastion.api.operator import ops as O
from bastion.core import errors as X
from bastion.ops.kit import CancelResult, Maintenance, OnlineSnapshot

Auth = Literal["none", "read", "trade", "withdraw", "admin"]
#: (name, JSON schema, required)
Query = tuple[str, dict[str, Any], bool]

#: served by the Guard's bare handler ahead of the router (``service.fastpath``)
FASTPATH = "fastpath"


@dataclass(frozen=True)
class Op:
    method: str
    path: str  # the router's path; ``{x:path}`` reads as ``{x}`` in the document
    handler: str  # a name registered in ``http.Handlers``, or FASTPATH
    summary: str
    auth: Auth = "none"
    body: Any = None
    response: Any = None
    status: int = 200
    query: tuple[Query, ...] = ()
    errors: tuple[str, ...] = ()
    tag: str = "market data"

    @property
    def doc_path(self) -> str:
        return re.sub(r"\{(\w+):\w+\}", r"{\1}", self.path)

    def codes(self) -> tuple[str, ...]:
        """Every code this operation can answer: its own plus those of its permission."""
        common: tuple[str, ...] = (A.MALFORMED_REQUEST, A.BODY_TOO_LARGE, A.RATE_LIMITED)
        if self.auth == "admin":
            common += (A.UNAUTHORIZED,)
        elif self.auth != "none":
            common += _SIGNED
        if self.method != "get":
            common += (A.UNAVAILABLE,)
        return tuple(dict.fromkeys(common + self.errors))


_SIGNED = (A.UNAUTHORIZED, A.INVALID_SIGNATURE, A.TIMESTAMP_OUTSIDE_WINDOW, A.REPLAYED,
           A.FORBIDDEN)
_MARKET_Q: Query = ("market", {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,32}$",
                               "example": "BTC-USDT"}, False)
_LIMIT_Q: Query = ("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, False)
_LIMIT_10K: Query = ("limit", {"type": "integer", "minimum": 1, "maximum": 10000}, False)
_ASSET_Q: Query = ("asset", {"type": "string", "maxLength": 16}, False)

_MKT = (X.UNKNOWN_MARKET,)
_ORDER_RULES = (X.INVALID_PRICE, X.INVALID_QUANTITY, X.TICK_SIZE, X.LOT_SIZE, X.MIN_QUANTITY,
                X.MAX_QUANTITY, X.MIN_NOTIONAL, X.PRICE_BAND, X.MARKET_MODE,
                X.INSUFFICIENT_FUNDS, X.INSUFFICIENT_MARGIN, X.POST_ONLY_WOULD_CROSS,
                X.NO_MARK_PRICE, X.ORACLE_STALE, X.GUARD)
_PLACE = (*_MKT, *_ORDER_RULES, X.INVALID_ARGUMENT, X.NO_LIQUIDITY, X.FOK_NOT_FILLABLE,
          X.SELF_TRADE, X.REDUCE_ONLY, X.DUPLICATE_CLIENT_ID)
_AMEND = (X.UNKNOWN_ORDER, X.NO_CHANGE, *_ORDER_RULES)
_CANCEL = (X.UNKNOWN_ORDER, X.MARKET_MODE)
_PERP = (*_MKT, X.NOT_PERP, X.INSUFFICIENT_MARGIN, X.INVALID_LEVERAGE, X.INVALID_AMOUNT,
         X.UNKNOWN_ASSET, X.NO_MARK_PRICE, X.ORACLE_STALE)
_WITHDRAW = (X.UNKNOWN_ASSET, X.INVALID_ADDRESS, X.INVALID_AMOUNT, X.INSUFFICIENT_FUNDS,
             X.BELOW_MINIMUM, X.DAILY_LIMIT, X.WITHDRAWALS_DISABLED, X.WITHDRAWALS_PAUSED)
_WID = (X.UNKNOWN_WITHDRAWAL,)
_KIT = (X.UNKNOWN_MARKET, X.INVALID_ARGUMENT)

OPS: tuple[Op, ...] = (
    # ---------------------------------------------------------------- public market data
    Op("get", "/v1/time", "native.server_time", "Server time (ms)", response=S.ServerTime),
    Op("get", "/v1/markets", "native.markets", "Markets with their metadata and current mode",
       response=list[S.MarketInfo]),
    Op("get", "/v1/markets/{market}", "native.market", "One market", response=S.MarketInfo,
       errors=_MKT),
    Op("get", "/v1/markets/{market}/book", "native.book",
       "L2 order book snapshot with its feed sequence", response=S.Book, errors=_MKT,
       query=(("depth", {"type": "integer", "minimum": 1, "maximum": 5000}, False),)),
    Op("get", "/v1/markets/{market}/trades", "native.trades",
       "Recent public trades, newest first", response=list[S.PublicTrade], errors=_MKT,
       query=(_LIMIT_Q,)),
    Op("get", "/v1/markets/{market}/ticker", "native.ticker",
       "Best bid/ask, last price, 24h statistics", response=S.Ticker, errors=_MKT),
    Op("get", "/v1/markets/{market}/candles", "native.candles", "OHLCV candles",
       response=list[S.Candle], errors=_MKT,
       query=(("interval", {"type": "string", "enum": list(S.INTERVALS)}, False), _LIMIT_Q)),
    Op("get", "/v1/markets/{market}/funding", "native.funding",
       "Mark, index and funding of a perpetual", response=S.Funding,
       errors=(*_MKT, X.NOT_PERP)),
    # ---------------------------------------------------------------- orders
    Op("post", PLACE_PATH, FASTPATH, "Place an order (acknowledged once journaled; a repeated "
       "client_order_id answers 200 with the first order)", "trade", S.PlaceOrder, S.Order,
       201, errors=_PLACE, tag="orders"),
    Op("get", "/v1/orders", "native.list_orders", "Your orders (open and recent history)",
       "read", response=list[S.Order], tag="orders", errors=_MKT,
       query=(_MARKET_Q, ("status", {"type": "string", "enum": ["open", "all"]}, False),
              _LIMIT_10K)),
    Op("delete", "/v1/orders", "native.cancel_all",
       "Cancel all your open orders (optionally in one market)", "trade",
       response=S.CancelAllResult, tag="orders", query=(_MARKET_Q,),
       errors=(*_MKT, X.MARKET_MODE)),
    Op("get", "/v1/orders/open", "native.open_orders", "Your open orders", "read",
       response=list[S.Order], tag="orders", query=(_MARKET_Q,), errors=_MKT),
    Op("get", "/v1/orders/by-client-id/{client_id:path}", "native.get_order_by_client",
       "One of your orders by client order id", "read", response=S.Order, tag="orders",
       errors=(X.UNKNOWN_ORDER,)),
    Op("delete", "/v1/orders/by-client-id/{client_id:path}", "native.cancel_by_client",
       "Cancel by client order id", "trade", response=S.Order, tag="orders", errors=_CANCEL),
    Op("get", "/v1/orders/{order_id}", "native.get_order", "One of your orders", "read",
       response=S.Order, tag="orders", errors=(X.UNKNOWN_ORDER,)),
    Op("patch", "/v1/orders/{order_id}", "native.amend", "Amend price and/or quantity",
       "trade", S.AmendOrder, S.Order, tag="orders", errors=_AMEND),
    Op("delete", "/v1/orders/{order_id}", "native.cancel", "Cancel an order", "trade",
       response=S.Order, tag="orders", errors=_CANCEL),
    # ---------------------------------------------------------------- account
    Op("get", "/v1/fills", "native.fills", "Your fills, oldest first", "read",
       response=list[S.Fill], tag="account", query=(_MARKET_Q, _LIMIT_10K), errors=_MKT),
    Op("get", "/v1/balances", "native.balances", "Your balances", "read",
       response=list[S.Balance], tag="account"),
    Op("get", "/v1/positions", "native.positions", "Your perpetual positions", "read",
       response=list[S.Position], tag="account"),
    Op("get", "/v1/margin", "native.margin", "Your cross-margin accounts (perpetuals)", "read",
       response=list[S.MarginAccount], tag="account"),
    Op("post", "/v1/margin", "native.transfer_margin",
       "Move funds between spot wallet and cross margin; answers the margin account changed",
       "trade", S.MarginTransfer, S.MarginAccount, tag="account",
       errors=(*_PERP, X.INSUFFICIENT_FUNDS)),
    Op("post", "/v1/leverage", "native.leverage", "Set your leverage in a perpetual market; "
       "answers that market's leverage, position and margin account", "trade", S.Leverage,
       S.LeverageSet, tag="account", errors=_PERP),
    # ---------------------------------------------------------------- wallet
    Op("post", "/v1/withdrawals", "wallet.create", "Request a withdrawal: held, then sent to "
       "custody (a repeated client_id answers 200 with the first)", "withdraw", S.Withdraw,
       S.WithdrawalView, 201, errors=_WITHDRAW, tag="wallet"),
    Op("get", "/v1/withdrawals", "wallet.list_withdrawals", "Your withdrawals, newest first",
       "read", response=list[S.WithdrawalView], query=(_ASSET_Q,), tag="wallet"),
    Op("get", "/v1/withdrawals/{wid}", "wallet.get_withdrawal", "One of your withdrawals",
       "read", response=S.WithdrawalView, errors=_WID, tag="wallet"),
    Op("delete", "/v1/withdrawals/{wid}", "wallet.cancel_withdrawal",
       "Cancel a withdrawal (until it is submitted)", "withdraw", response=S.WithdrawalView,
       errors=(*_WID, X.WITHDRAWAL_STATE), tag="wallet"),
    Op("get", "/v1/deposits", "wallet.list_deposits",
       "Your deposits: confirming (n of N) or credited", "read",
       response=list[Wt.DepositView], query=(_ASSET_Q,),
       tag="wallet"),
    Op("get", "/v1/deposit-address", "wallet.deposit_address",
       "Your deposit address for an asset", "read", response=Wt.DepositAddress,
       errors=(X.UNKNOWN_ASSET, A.UNAVAILABLE),
       query=(("asset", {"type": "string", "maxLength": 16}, True),), tag="wallet"),
    # ---------------------------------------------------------------- operator
    Op("post", "/admin/deposits", "admin.deposit", "Credit an account", "admin",
       S.AdminDeposit, S.Accepted, 201, errors=(X.UNKNOWN_ASSET, X.INVALID_AMOUNT),
       tag="operator"),
    Op("post", "/admin/markets/{market}/mode", "admin.set_mode", "Change a market's mode",
       "admin", S.AdminMode, S.Accepted, errors=(*_MKT, X.NO_CHANGE), tag="operator"),
    Op("patch", "/admin/markets/{market}", "admin.update_market", "Update market metadata",
       "admin", S.AdminMarketUpdate, S.Accepted, errors=(*_MKT, X.INVALID_ARGUMENT),
       tag="operator"),
    Op("post", "/admin/markets/{market}/reference-price", "admin.reference_price",
       "Set the reference price", "admin", S.AdminReferencePrice, S.Accepted,
       errors=(*_MKT, X.INVALID_PRICE), tag="operator"),
    Op("get", "/admin/markets/{market}/book", "admin.book", "The engine's full book",
       "admin", response=S.Book, errors=_MKT, tag="operator"),
    Op("post", "/admin/keys", "admin.create_key", "Create an API key; the secret is shown once",
       "admin", S.AdminKey, S.ApiKeyCreated, 201, tag="operator"),
    Op("patch", "/admin/keys/{key}", "admin.change_key", "Change a key's permissions; applies "
       "at once, open WebSockets included", "admin", S.AdminKeyPermissions, S.ApiKeyInfo,
       errors=(A.NOT_FOUND,), tag="operator"),
    Op("delete", "/admin/keys/{key}", "admin.revoke_key", "Revoke an API key; open "
       "WebSockets logged in with it are closed", "admin", status=204,
       errors=(A.NOT_FOUND,), tag="operator"),
    Op("get", "/admin/accounts/{account}", "admin.account",
       "An account's balances and open orders", "admin", response=S.AccountView,
       errors=(X.UNKNOWN_ACCOUNT,),
       tag="operator"),
    Op("get", "/admin/health", "admin.health", "State hash and invariant check", "admin",
       response=S.Health, tag="operator"),
    Op("post", "/admin/migrations", "admin.apply_migration", "Apply a metadata migration; the "
       "body is the migration file (TOML), applied atomically as one journaled command",
       "admin", response=S.Accepted, status=201, errors=(X.INVALID_ARGUMENT,),
       query=(("dry_run", {"type": "string", "maxLength": 200}, False),), tag="operator"),
    Op("get", "/admin/migrations", "admin.migrations",
       "Applied migrations and pending timed steps", "admin", response=S.Migrations,
       tag="operator"),
    Op("post", "/admin/migrations/{migration}/rollback", "admin.rollback_migration",
       "Roll back the latest applied migration as another journaled command", "admin",
       S.AdminMigrationRollback, S.Accepted, errors=(X.INVALID_ARGUMENT,), tag="operator"),
    Op("get", "/admin/withdrawals", "wallet.queue", "Withdrawal queue per asset (depth, "
       "oldest age, pause, breaker) and every open withdrawal", "admin",
       response=Wt.WithdrawalQueue, tag="operator"),
    Op("post", "/admin/withdrawals/pause", "wallet.pause", "Pause an asset's withdrawals",
       "admin", Wt.PauseRequest, Wt.AssetQueue, errors=(X.UNKNOWN_ASSET, X.NO_CHANGE),
       tag="operator"),
    Op("post", "/admin/withdrawals/resume", "wallet.resume", "Resume an asset's withdrawals",
       "admin", Wt.PauseRequest, Wt.AssetQueue, errors=(X.UNKNOWN_ASSET, X.NO_CHANGE),
       tag="operator"),
    Op("post", "/admin/withdrawals/rules", "wallet.set_rules", "Set an asset's withdrawal "
       "rules (minimum, fee, daily limit, manual review threshold)", "admin", Wt.RulesRequest,
       Wt.AssetQueue, errors=(X.UNKNOWN_ASSET, X.INVALID_AMOUNT), tag="operator"),
    Op("post", "/admin/withdrawals/{wid}/approve", "wallet.approve",
       "Approve a withdrawal held for review", "admin", Wt.Decision, S.WithdrawalView,
       errors=(*_WID, X.WITHDRAWAL_STATE), tag="operator"),
    Op("post", "/admin/withdrawals/{wid}/reject", "wallet.reject",
       "Reject a withdrawal held for review (its hold is released)", "admin", Wt.Decision,
       S.WithdrawalView, errors=(*_WID, X.WITHDRAWAL_STATE), tag="operator"),
    Op("post", "/admin/ops/credits", "ops.credits", "Journal a compensation report's credits "
       "(idempotent per incident, account and asset)", "admin", O.CreditsReq,
       O.CreditsResult, errors=(X.UNKNOWN_ASSET, X.INVALID_AMOUNT), tag="operator kit"),
    Op("post", "/admin/ops/modes", "ops.modes", "Set the mode of several markets (halt, "
       "resume) as journaled commands", "admin", O.ModesReq, O.ModesResult,
       errors=_KIT, tag="operator kit"),
    Op("post", "/admin/ops/cancel", "ops.cancel", "Selective mass cancel by market, account, "
       "order kind and side (dry_run counts only)", "admin", O.CancelReq, CancelResult, errors=_KIT,
       tag="operator kit"),
    Op("post", "/admin/ops/snapshots", "ops.snapshot", "Take a named snapshot online",
       "admin", O.SnapshotReq, OnlineSnapshot, status=201, errors=(X.INVALID_ARGUMENT,), tag="operator kit"),
    Op("post", "/admin/ops/maintenance", "ops.maintenance_begin", "Open a maintenance window "
       "(markets to a restricted mode, announced on the status page)", "admin",
       O.MaintenanceReq, Maintenance, 201, errors=(*_KIT, "MAINTENANCE_OPEN"),
       tag="operator kit"),
    Op("delete", "/admin/ops/maintenance", "ops.maintenance_end", "Close the open maintenance "
       "window (markets back to their modes)", "admin", response=Maintenance,
       errors=("NO_MAINTENANCE",), tag="operator kit"),
    Op("get", "/admin/ops/maintenance", "ops.maintenance_get", "The open maintenance window",
       "admin", response=Maintenance, errors=(A.NOT_FOUND,), tag="operator kit"),
    Op("post", "/admin/ops/rollback", "ops.rollback", "Roll the deployment back: halt every "
       "market, record the request, restart onto a snapshot or seq and reopen in recovery",
       "admin", O.RollbackReq, O.RollbackAccepted, status=202, errors=(*_KIT, "UNKNOWN_SNAPSHOT"),
       tag="operator kit"),
)


def mount(handlers: Mapping[str, Handler], ops: tuple[Op, ...] = OPS) -> list[Route]:
    """The router's routes, in table order. Every handler registered must be in the table and
    every routed op must have its handler, so neither can be added without the other."""
    routed = {op.handler for op in ops if op.handler != FASTPATH}
    missing = routed - handlers.keys()
    unused = handlers.keys() - routed
    if missing or unused:
        raise ValueError(f"route table and handlers differ: no handler for {sorted(missing)}, "
                         f"not in the table: {sorted(unused)}")
    return [Route(op.path, handlers[op.handler], methods=[op.method.upper()])
            for op in ops if op.handler != FASTPATH]
