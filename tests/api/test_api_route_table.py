"""The router and ``/openapi.json`` come from one table (``bastion.api.routes``): every handler
a module registers is routed and documented, every routed op has its handler, and the document
validates."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest
from openapi_spec_validator import validate
from starlette.routing import Route

from bastion.api import routes as table
from bastion.api import wallet
from bastion.api.http import Handlers
from bastion.api.native import routes as native
from bastion.api.openapi import build_spec
from bastion.api.operator import admin, ops
from bastion.status import StatusRuntime, StatusService, status_routes

Endpoint = tuple[str, str]


def _handlers(tmp: str) -> dict[str, Any]:
    ctx: Any = SimpleNamespace(gateway=SimpleNamespace(), extra={},
                               settings=SimpleNamespace(data_dir=tmp))
    return {**native.handlers(ctx), **wallet.handlers(ctx), **admin.handlers(ctx),
            **ops.handlers(ctx)}


def _routed(tmp: str) -> set[Endpoint]:
    """(method, documented path) of every route the router is built with, plus the order
    entry the Guard serves ahead of it."""
    out = {("post", native.PLACE_PATH)}
    for route in table.mount(_handlers(tmp)):
        assert isinstance(route, Route)
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
        out |= {(m.lower(), path) for m in route.methods or () if m != "HEAD"}
    return out


def _status_routed(tmp: Path) -> set[Endpoint]:
    runtime = StatusRuntime(StatusService(tmp / "status.db"))
    return {(m.lower(), route.path) for route in status_routes(runtime, "tok")
            if isinstance(route, Route) for m in route.methods or () if m != "HEAD"}


def test_router_and_document_list_the_same_operations(tmp_path: Path) -> None:
    spec = build_spec()
    validate(spec)
    documented = {(m, p) for p, item in spec["paths"].items() for m in item}
    routed = _routed(str(tmp_path)) | _status_routed(tmp_path)
    assert routed == documented
    # the whole API, operator routes included, not an empty router
    assert len({e for e in routed if e[1].startswith("/v1/")}) >= 29
    assert len({e for e in routed if e[1].startswith("/admin/")}) >= 27 + 14
    assert len({e for e in routed if e[1].startswith("/api/v2/")}) >= 9
    for path, item in spec["paths"].items():
        for method, op in item.items():
            assert op["summary"] and op["responses"], (method, path)
            if path.startswith("/admin/"):
                assert op["security"] == [{"operator": []}], (method, path)


def test_every_op_documents_its_error_codes() -> None:
    spec = build_spec()
    place = spec["paths"]["/v1/orders"]["post"]["responses"]
    assert "`LOT_SIZE`" in place["400"]["description"]
    assert "`MARKET_MODE`" in place["409"]["description"]
    assert "`INVALID_SIGNATURE`" in place["401"]["description"]
    public = spec["paths"]["/v1/time"]["get"]["responses"]
    assert "401" not in public  # a public route never answers an auth error
    # operator responses typed from the ops kit's own result types
    cancel = spec["paths"]["/admin/ops/cancel"]["post"]["responses"]["200"]
    assert cancel["content"]["application/json"]["schema"]["$ref"].endswith("/CancelResult")
    assert "canceled" in spec["components"]["schemas"]["CancelResult"]["properties"]
    error = spec["components"]["schemas"]["Error"]["properties"]
    assert {"code", "message", "field", "limit", "value"} <= error.keys()


def test_a_handler_outside_the_table_or_an_op_without_handler_is_refused(tmp_path: Any
                                                                        ) -> None:
    handlers = _handlers(str(tmp_path))
    extra = Handlers("native")

    @extra
    async def forgotten(request: Any) -> Any:
        raise AssertionError

    with pytest.raises(ValueError, match="native.forgotten"):
        table.mount({**handlers, **extra})
    handlers.pop("native.amend")
    with pytest.raises(ValueError, match="native.amend"):
        table.mount(handlers)
    with pytest.raises(ValueError, match="registered twice"):
        extra.add("forgotten", forgotten)


def test_every_get_answers_in_the_documented_schema(tmp_path: Path) -> None:
    """What the server sends decodes, strictly, into the response type the table documents:
    every parameterless GET (native, wallet, operator) plus the ones about a real order, market
    and account, and the operator POSTs whose answers were typed last."""
    from serverproc import Admin, Server

    srv = Server(tmp_path / "data", BASTION_RATE_KEY="0", BASTION_RATE_IP="0").start()
    admin_http = Admin(srv.url)
    try:
        trader = admin_http.new_account(4242, permissions=["read", "trade", "withdraw"])
        placed = trader.place(market="BTC-USDT", side="buy", type="limit", price="1000",
                              quantity="0.01", client_order_id="doc/check-1")
        assert placed.status_code == 201, placed.text
        oid = placed.json()["order_id"]
        params = {"{market}": "BTC-USDT", "{order_id}": str(oid),
                  "{client_id:path}": "doc/check-1", "{account}": "4242"}
        checked = 0
        for op in table.OPS:
            if op.method != "get" or op.response is None:
                continue
            path = op.path.replace("{market}/funding", "BTC-USDT-PERP/funding")
            for name, value in params.items():
                path = path.replace(name, value)
            if "{" in path:
                continue  # ids of things this test does not create (withdrawals)
            query = {"asset": "USDT"} if op.path == "/v1/deposit-address" else None
            if op.auth == "admin":
                r = admin_http.get(path)
            else:
                r = trader.get(path, params=query, signed=op.auth != "none")
            if r.status_code != 200:  # e.g. no custody here, no maintenance open: documented
                assert r.json()["code"] in op.codes(), (op.path, r.status_code, r.text)
                continue
            msgspec.json.decode(r.content, type=op.response, strict=True)
            checked += 1
        assert checked >= 20
        typed = {(o.method, o.path): o.response for o in table.OPS}
        for path, body in (("/admin/withdrawals/pause", {"asset": "USDT", "reason": "doc"}),
                           ("/admin/withdrawals/resume", {"asset": "USDT", "reason": "doc"}),
                           ("/admin/ops/modes", {"mode": "halted", "reason": "doc",
                                                 "markets": ["ETH-USDT"]}),
                           ("/admin/ops/credits", {"incident": "doc-1", "reason": "doc",
                                                   "credits": [{"account": 4242,
                                                                "asset": "USDT",
                                                                "amount": "1"}]})):
            r = admin_http.post(path, body)
            assert r.status_code == 200, (path, r.text)
            msgspec.json.decode(r.content, type=typed[("post", path)], strict=True)
    finally:
        admin_http.close()
        srv.kill()
