"""The OpenAPI 3.1 document (``/openapi.json``); ``bastion.api.docs`` serves it as Swagger UI.

Assembled by hand from the same msgspec Structs the handlers decode and encode
(``msgspec.json.schema_components``), so the document describes exactly what the server does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from bastion.api.native import schemas as S

REF = "#/components/schemas/{name}"


@dataclass
class Op:
    method: str
    path: str
    summary: str
    auth: str = "none"  # none | read | trade | withdraw | admin
    body: type | None = None
    response: Any = None
    status: int = 200
    query: list[tuple[str, dict[str, Any], bool]] = field(default_factory=list)
    tag: str = "market data"


_MARKET = ("market", {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,32}$",
                      "example": "BTC-USDT"}, False)
_LIMIT = ("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, False)

OPS: list[Op] = [
    Op("get", "/v1/time", "Server time (ms)", response=S.ServerTime),
    Op("get", "/v1/markets", "Markets with their metadata and current mode",
       response=list[S.MarketInfo]),
    Op("get", "/v1/markets/{market}", "One market", response=S.MarketInfo),
    Op("get", "/v1/markets/{market}/book", "L2 order book snapshot with its feed sequence",
       response=S.Book, query=[("depth", {"type": "integer", "minimum": 1, "maximum": 5000},
                                False)]),
    Op("get", "/v1/markets/{market}/trades", "Recent public trades, newest first",
       response=list[S.PublicTrade], query=[_LIMIT]),
    Op("get", "/v1/markets/{market}/ticker", "Best bid/ask, last price, 24h statistics",
       response=S.Ticker),
    Op("get", "/v1/markets/{market}/candles", "OHLCV candles", response=list[S.Candle],
       query=[("interval", {"type": "string", "enum": list(S.INTERVALS)}, False), _LIMIT]),
    Op("get", "/v1/markets/{market}/funding", "Mark, index and funding of a perpetual",
       response=S.Funding),
    Op("post", "/v1/orders", "Place an order (acknowledged once journaled)", "trade",
       S.PlaceOrder, S.Order, 201, tag="orders"),
    Op("get", "/v1/orders", "Your orders (open and recent history)", "read",
       response=list[S.Order], tag="orders",
       query=[_MARKET, ("status", {"type": "string", "enum": ["open", "all"]}, False),
              ("limit", {"type": "integer", "minimum": 1, "maximum": 10000}, False)]),
    Op("delete", "/v1/orders", "Cancel all your open orders (optionally in one market)",
       "trade", response=S.CancelAllResult, tag="orders", query=[_MARKET]),
    Op("get", "/v1/orders/open", "Your open orders", "read", response=list[S.Order],
       tag="orders", query=[_MARKET]),
    Op("get", "/v1/orders/{order_id}", "One of your orders", "read", response=S.Order,
       tag="orders"),
    Op("patch", "/v1/orders/{order_id}", "Amend price and/or quantity", "trade", S.AmendOrder,
       S.Order, tag="orders"),
    Op("delete", "/v1/orders/{order_id}", "Cancel an order", "trade", response=S.Order,
       tag="orders"),
    Op("get", "/v1/orders/by-client-id/{client_id}", "One of your orders by client order id",
       "read", response=S.Order, tag="orders"),
    Op("delete", "/v1/orders/by-client-id/{client_id}", "Cancel by client order id", "trade",
       response=S.Order, tag="orders"),
    Op("get", "/v1/fills", "Your fills, oldest first", "read", response=list[S.Fill],
       tag="account", query=[_MARKET, ("limit", {"type": "integer", "minimum": 1,
                                                 "maximum": 10000}, False)]),
    Op("get", "/v1/balances", "Your balances", "read", response=list[S.Balance],
       tag="account"),
    Op("get", "/v1/positions", "Your perpetual positions", "read", response=list[S.Position],
       tag="account"),
    Op("get", "/v1/margin", "Your cross-margin accounts (perpetuals)", "read",
       response=list[S.MarginAccount], tag="account"),
    Op("post", "/v1/margin", "Move funds between spot wallet and cross margin", "trade",
       S.MarginTransfer, list[S.MarginAccount], tag="account"),
    Op("post", "/v1/leverage", "Set your leverage in a perpetual market", "trade", S.Leverage,
       list[S.MarginAccount], tag="account"),
    Op("post", "/v1/withdrawals", "Request a withdrawal: held, then sent to custody (a "
       "repeated client_id answers 200 with the first)", "withdraw", S.Withdraw, None, 201,
       tag="wallet"),
    Op("get", "/v1/withdrawals", "Your withdrawals, newest first", "read",
       query=[("asset", {"type": "string", "maxLength": 16}, False)], tag="wallet"),
    Op("get", "/v1/withdrawals/{wid}", "One of your withdrawals", "read", tag="wallet"),
    Op("delete", "/v1/withdrawals/{wid}", "Cancel a withdrawal (until it is submitted)",
       "withdraw", tag="wallet"),
    Op("get", "/v1/deposits", "Your deposits: confirming (n of N) or credited", "read",
       query=[("asset", {"type": "string", "maxLength": 16}, False)], tag="wallet"),
    Op("get", "/v1/deposit-address", "Your deposit address for an asset", "read",
       query=[("asset", {"type": "string", "maxLength": 16}, True)], tag="wallet"),
    Op("post", "/admin/deposits", "Credit an account (operator)", "admin", S.AdminDeposit,
       S.Accepted, 201, tag="operator"),
    Op("post", "/admin/markets/{market}/mode", "Change a market's mode (operator)", "admin",
       S.AdminMode, S.Accepted, tag="operator"),
    Op("patch", "/admin/markets/{market}", "Update market metadata (operator)", "admin",
       S.AdminMarketUpdate, S.Accepted, tag="operator"),
    Op("post", "/admin/markets/{market}/reference-price", "Set the reference price (operator)",
       "admin", S.AdminReferencePrice, S.Accepted, tag="operator"),
    Op("get", "/admin/markets/{market}/book", "The engine's full book (operator)", "admin",
       response=S.Book, tag="operator"),
    Op("post", "/admin/keys", "Create an API key; the secret is shown once (operator)",
       "admin", S.AdminKey, S.ApiKeyCreated, 201, tag="operator"),
    Op("patch", "/admin/keys/{key}", "Change a key's permissions; applies at once, open "
       "WebSockets included (operator)", "admin", S.AdminKeyPermissions, S.ApiKeyInfo,
       tag="operator"),
    Op("get", "/admin/health", "State hash and invariant check (operator)", "admin",
       response=S.Health, tag="operator"),
    Op("post", "/admin/migrations", "Apply a metadata migration; the body is the migration "
       "file (TOML), applied atomically as one journaled command (operator)", "admin",
       response=S.Accepted, status=201,
       query=[("dry_run", {"type": "string", "maxLength": 200}, False)], tag="operator"),
    Op("get", "/admin/migrations", "Applied migrations and pending timed steps (operator)",
       "admin", tag="operator"),
    Op("post", "/admin/migrations/{migration}/rollback", "Roll back the latest applied "
       "migration as another journaled command (operator)", "admin", S.AdminMigrationRollback,
       S.Accepted, tag="operator"),
]

_ERRORS = {
    "400": "invalid request (stable `code`, e.g. INVALID_PRICE, LOT_SIZE, INSUFFICIENT_FUNDS)",
    "401": "missing/invalid credentials, signature, timestamp or replay",
    "403": "the key lacks the permission",
    "404": "unknown market/order",
    "409": "conflict with current state (e.g. MARKET_MODE, NO_CHANGE)",
    "413": "request body too large",
    "429": "rate limited (see Retry-After)",
}


def _path_params(path: str) -> list[dict[str, Any]]:
    out = []
    for part in path.split("/"):
        if part.startswith("{"):
            name = part[1:-1]
            schema: dict[str, Any] = ({"type": "integer", "minimum": 1} if name == "order_id"
                                      else {"type": "string", "minLength": 1, "maxLength": 64})
            out.append({"name": name, "in": "path", "required": True, "schema": schema})
    return out


def build_spec(title: str = "Bastion trading API", version: str = "1") -> dict[str, Any]:
    types: list[Any] = [S.Error]
    for op in OPS:
        if op.body is not None:
            types.append(op.body)
        if op.response is not None:
            types.append(op.response)
    schemas, components = msgspec.json.schema_components(types, ref_template=REF)
    it = iter(schemas[1:])
    paths: dict[str, dict[str, Any]] = {}
    for op in OPS:
        body_schema = next(it) if op.body is not None else None
        resp_schema = next(it) if op.response is not None else None
        o: dict[str, Any] = {"summary": op.summary, "tags": [op.tag],
                             "operationId": f"{op.method}_{op.path}".replace("/", "_")
                             .replace("{", "").replace("}", "").replace("-", "_")}
        params = _path_params(op.path) + [
            {"name": n, "in": "query", "required": req, "schema": sch}
            for n, sch, req in op.query]
        if params:
            o["parameters"] = params
        if body_schema is not None:
            o["requestBody"] = {"required": True,
                                "content": {"application/json": {"schema": body_schema}}}
        responses: dict[str, Any] = {str(op.status): {
            "description": "success",
            "content": {"application/json": {"schema": resp_schema or {}}}}}
        for status, text in _ERRORS.items():
            responses[status] = {"description": text, "content": {"application/json": {
                "schema": {"$ref": REF.format(name="Error")}}}}
        o["responses"] = responses
        if op.auth == "admin":
            o["security"] = [{"operator": []}]
        elif op.auth != "none":
            o["security"] = [{"apiKey": [], "timestamp": [], "signature": []}]
            o["description"] = f"Needs the `{op.auth}` permission."
        paths.setdefault(op.path, {})[op.method] = o
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": (
            "Money is always a decimal string. Private calls are signed: X-BX-SIGNATURE = hex "
            "HMAC-SHA256(secret, X-BX-TIMESTAMP + METHOD + path[?query] + body).")},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-BX-APIKEY"},
                "timestamp": {"type": "apiKey", "in": "header", "name": "X-BX-TIMESTAMP"},
                "signature": {"type": "apiKey", "in": "header", "name": "X-BX-SIGNATURE"},
                "operator": {"type": "http", "scheme": "bearer"},
            },
        },
    }
