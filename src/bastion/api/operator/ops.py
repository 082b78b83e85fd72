"""Operator kit routes (``/admin/ops``): multi-market modes (halt/resume), selective mass
cancel, online named snapshots, maintenance windows, rollback of the running deployment, and
compensation credits. Operator token only; each action is journaled through the node by
``bastion.ops.kit`` (this module only parses, authorizes and renders).
"""

from __future__ import annotations

import os
import signal
from dataclasses import asdict
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response

from bastion.api import errors as A
from bastion.api.app_context import Context
from bastion.api.convert import to_units
from bastion.api.errors import ApiError
from bastion.api.http import JSON, Handlers, admin, decode
from bastion.core import commands as C
from bastion.core import errors as X
from bastion.core import events as E
from bastion.journal.errors import DurabilityError
from bastion.ops import kit
from bastion.ops.cancel import CancelFilter

Markets = Annotated[list[Annotated[str, Meta(max_length=32)]], Meta(max_length=1000)]
Reason = Annotated[str, Meta(min_length=1, max_length=200)]
Name = Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")]
Mode = Literal["open", "post_only", "cancel_only", "recovery", "halted", "closed"]
Kind = Literal["limit", "post_only", "market", "tp_sl"]


class Base(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class ModesReq(Base):
    mode: Mode
    reason: Reason
    markets: Markets = []
    until_ms: Annotated[int, Meta(ge=0, le=2**62)] = 0


class CancelReq(Base):
    markets: Markets = []
    accounts: Annotated[list[Annotated[int, Meta(ge=1, le=2**53)]], Meta(max_length=10_000)] = []
    kinds: list[Kind] = []
    except_kinds: list[Kind] = []
    side: Literal["", "buy", "sell"] = ""
    dry_run: bool = False
    reason: Reason = "operator mass cancel"


class ModesResult(msgspec.Struct):
    seq: int
    #: each market's resulting mode (unchanged ones included, refused ones with their code)
    markets: dict[str, str]


class RollbackAccepted(msgspec.Struct):
    seq: int
    halted: dict[str, str]
    restarting: bool


class CreditRefusal(msgspec.Struct):
    account: int
    asset: str
    code: str
    message: str


class CreditsResult(msgspec.Struct):
    incident: str
    credited: int
    already: int
    refused: list[CreditRefusal]
    seq: int


class SnapshotReq(Base):
    name: Name


class MaintenanceReq(Base):
    name: Name
    reason: Reason
    markets: Markets = []
    mode: Literal["", "post_only", "cancel_only", "halted", "closed"] = ""
    minutes: Annotated[int, Meta(ge=1, le=7 * 24 * 60)] = 30


class RollbackReq(Base):
    who: Reason
    why: Reason
    to_snapshot: Name | None = None
    to_seq: Annotated[int, Meta(ge=0, le=2**62)] | None = None
    recovery_s: Annotated[float, Meta(ge=0, le=24 * 3600)] = 600.0


class CreditLine(Base):
    account: Annotated[int, Meta(ge=1, le=2**53)]
    asset: Annotated[str, Meta(min_length=1, max_length=16)]
    amount: Annotated[str, Meta(pattern=r"^[0-9]{1,30}(\.[0-9]{1,18})?$", max_length=40)]


class CreditsReq(Base):
    incident: Annotated[str, Meta(min_length=1, max_length=64)]
    reason: Reason
    credits: Annotated[list[CreditLine], Meta(min_length=1, max_length=100_000)]


def _kit_error(exc: Exception) -> ApiError:
    if isinstance(exc, DurabilityError):
        status = {"UNKNOWN_MARKET": 404, "MAINTENANCE_OPEN": 409, "NO_MAINTENANCE": 409,
                  "UNKNOWN_SNAPSHOT": 404}.get(exc.code, 400)
        return ApiError(exc.code, exc.message, status=status)
    return ApiError("INVALID_ARGUMENT", str(exc), status=400)


def handlers(ctx: Context) -> Handlers:
    """The handlers the route table (``bastion.api.routes``) mounts."""
    h = Handlers("ops")
    gw = ctx.gateway
    data = ctx.settings.data_dir

    def status() -> Any:
        return ctx.extra.get("status")

    @h
    async def modes(request: Request) -> Response:
        admin(ctx, request)
        req = decode(await request.body(), ModesReq)
        try:
            out = await kit.set_modes(gw.node, req.markets, req.mode, req.reason, req.until_ms)
        except (DurabilityError, ValueError) as exc:
            raise _kit_error(exc) from exc
        return JSON(ModesResult(seq=gw.engine.seq, markets=out))

    @h
    async def cancel(request: Request) -> Response:
        admin(ctx, request)
        req = decode(await request.body(), CancelReq)
        try:
            flt = CancelFilter(markets=frozenset(req.markets), accounts=frozenset(req.accounts),
                               kinds=frozenset(req.kinds), except_kinds=frozenset(
                                   req.except_kinds), side=req.side)
            result = await kit.cancel(gw.node, flt, req.dry_run, req.reason)
        except (DurabilityError, ValueError) as exc:
            raise _kit_error(exc) from exc
        return JSON(asdict(result))

    @h
    async def snapshot(request: Request) -> Response:
        admin(ctx, request)
        req = decode(await request.body(), SnapshotReq)
        try:
            return JSON(asdict(await kit.online_snapshot(gw.node, req.name)), status_code=201)
        except DurabilityError as exc:
            raise _kit_error(exc) from exc

    @h
    async def maintenance_begin(request: Request) -> Response:
        admin(ctx, request)
        req = decode(await request.body(), MaintenanceReq)
        try:
            rec = await kit.maintenance_begin(gw.node, data, status(), req.name, req.markets,
                                              req.mode, req.reason, req.minutes)
        except (DurabilityError, ValueError) as exc:
            raise _kit_error(exc) from exc
        return JSON(asdict(rec), status_code=201)

    @h
    async def maintenance_end(request: Request) -> Response:
        admin(ctx, request)
        try:
            rec = await kit.maintenance_end(gw.node, data, status())
        except DurabilityError as exc:
            raise _kit_error(exc) from exc
        return JSON(asdict(rec))

    @h
    async def maintenance_get(request: Request) -> Response:
        admin(ctx, request)
        rec = kit.open_maintenance(data)
        if rec is None:
            raise ApiError(A.NOT_FOUND, "no maintenance is open")
        return JSON(asdict(rec))

    @h
    async def rollback(request: Request) -> Response:
        """Stop order entry (halt every market, journaled), record the request, then shut the
        node down; the serving loop rolls back and reopens in recovery."""
        admin(ctx, request)
        req = decode(await request.body(), RollbackReq)
        try:
            if req.to_snapshot is not None:
                gw.node.store.find(req.to_snapshot)
            kit.request_rollback(data, kit.RollbackRequest(
                req.who, req.why, req.to_snapshot, req.to_seq, req.recovery_s))
            halted = await kit.set_modes(gw.node, None, "halted", f"rollback: {req.why}")
        except (DurabilityError, ValueError) as exc:
            raise _kit_error(exc) from exc
        return JSON(RollbackAccepted(seq=gw.engine.seq, halted=halted, restarting=True),
                    status_code=202,
                    background=BackgroundTask(os.kill, os.getpid(), signal.SIGINT))

    @h
    async def credits(request: Request) -> Response:
        """Journal a compensation report's credits; idempotent per incident, account and
        asset (a repeat answers ``already`` and moves nothing)."""
        admin(ctx, request)
        req = decode(await request.body(), CreditsReq)
        cmds: list[C.Command] = []
        for line in req.credits:
            amount = to_units(line.amount, gw.asset_decimals(line.asset), X.INVALID_AMOUNT,
                              "amount")
            cmds.append(C.Credit(account=line.account, asset=line.asset, amount=amount,
                                 incident=req.incident, reason=req.reason))
        results = await gw.node.submit_many(cmds)
        credited = already = 0
        refused: list[CreditRefusal] = []
        for line, events in zip(req.credits, results, strict=True):
            for ev in events:
                if isinstance(ev, E.Credited):
                    already += ev.duplicate
                    credited += not ev.duplicate
                elif isinstance(ev, E.Rejected):
                    refused.append(CreditRefusal(account=line.account, asset=line.asset,
                                                 code=ev.code, message=ev.message))
        return JSON(CreditsResult(incident=req.incident, credited=credited, already=already,
                                  refused=refused, seq=gw.engine.seq))

    return h
