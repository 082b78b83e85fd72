"""HTTP and WebSocket interface: public status (Statuspage v2, OKX, HTML, Atom, `/ws/status`)
and the operator API under `/admin/status/` (Bearer admin token).

Every refusal is JSON `{"code": ..., "message": ...}` with a 4xx status, never a 500.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from bastion.status import schemas, statuspage
from bastion.status.egress import Egress
from bastion.status.errors import StatusError
from bastion.status.feed import render_feed
from bastion.status.html import render_page
from bastion.status.model import Incident, Subscriber
from bastion.status.runtime import StatusRuntime
from bastion.status.service import StatusService
from bastion.status.webhooks import RetryPolicy
from bastion.textnum import ascii_int

MAX_BODY = 64 * 1024
Handler = Callable[[Request], Awaitable[Response]]
T = TypeVar("T")
_json = msgspec.json.Encoder()


def json_response(data: Any, status: int = 200, public: bool = False) -> Response:
    headers = {"Cache-Control": "no-store"}
    if public:
        headers["Access-Control-Allow-Origin"] = "*"
    return Response(_json.encode(data), status, headers=headers, media_type="application/json")


def error_response(code: str, message: str, status: int) -> Response:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if status == 503:
        headers = {"Retry-After": "1"}
    return Response(
        _json.encode({"code": code, "message": message}),
        status,
        headers=headers,
        media_type="application/json",
    )


def refusals(handler: Handler) -> Handler:
    """Turn StatusError into its JSON 4xx response."""

    @functools.wraps(handler)
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except StatusError as exc:
            return error_response(exc.code, exc.message, exc.http_status)

    return wrapped


async def read_body(request: Request, schema: type[T]) -> T:
    """Decode and validate a JSON body, refusing oversize, malformed or off-schema input."""
    declared = request.headers.get("content-length")
    length = None if declared is None else ascii_int(declared)
    if declared is not None and (length is None or length > MAX_BODY):
        raise StatusError("body_too_large", f"request body must be at most {MAX_BODY} bytes", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise StatusError(
                "body_too_large", f"request body must be at most {MAX_BODY} bytes", 413
            )
        chunks.append(chunk)
    raw = b"".join(chunks) or b"{}"
    try:
        return msgspec.json.decode(raw, type=schema)
    except msgspec.ValidationError as exc:
        raise StatusError("invalid_request", str(exc), 422) from None
    except msgspec.DecodeError as exc:
        raise StatusError("invalid_json", f"body is not valid JSON: {exc}", 400) from None
    except RecursionError:
        raise StatusError("invalid_json", "body is nested too deeply", 400) from None


def _subscriber_json(s: Subscriber, pending: int = 0, secret: bool = False) -> dict[str, Any]:
    out = {
        "id": s.id,
        "url": s.url,
        "components": s.component_ids,
        "enabled": s.enabled,
        "disabled_at": statuspage.iso(s.disabled_ms),
        "disabled_reason": s.disabled_reason or None,
        "delivered": s.delivered,
        "failed_attempts": s.failed_attempts,
        "pending": pending,
        "created_at": statuspage.iso(s.created_ms),
    }
    if secret:
        out["secret"] = s.secret
    return out


@dataclass(frozen=True)
class StatusOp:
    """One row of the status API's route table: the router (`status_routes`) and the gateway's
    `/openapi.json` are both built from `OPS`, so neither lists a route the other lacks."""

    method: str
    path: str
    handler: str
    summary: str
    auth: Literal["none", "admin"] = "none"
    body: Any = None
    response: Any = None
    status: int = 200
    media: str = "application/json"
    #: (code, HTTP status) beyond the admin token and body checks every admin op has
    errors: tuple[tuple[str, int], ...] = ()


_V2 = "/api/v2"
_INCIDENT_404 = (("incident_not_found", 404),)
_OPERATOR_STATUS = (("invalid_component_status", 422), ("below_derived_status", 409),
                    ("market_halted", 409))
_INCIDENT_EDIT = (*_INCIDENT_404, ("incident_resolved", 409), ("invalid_incident_status", 422),
                  ("invalid_impact", 422), ("still_unhealthy", 409), *_OPERATOR_STATUS)
_STEP = (("maintenance_not_found", 404), ("invalid_transition", 409), ("invalid_body", 422))
_SV = "Statuspage v2 format"

OPS: tuple[StatusOp, ...] = (
    StatusOp("get", f"{_V2}/summary.json", "summary", f"Page, components and open incidents ({_SV})"),
    StatusOp("get", f"{_V2}/status.json", "status", f"Overall indicator ({_SV})"),
    StatusOp("get", f"{_V2}/components.json", "components", f"Components and their status ({_SV})"),
    StatusOp("get", f"{_V2}/incidents.json", "incidents", f"Recent incidents ({_SV})"),
    StatusOp("get", f"{_V2}/incidents/unresolved.json", "unresolved",
             f"Unresolved incidents ({_SV})"),
    StatusOp("get", f"{_V2}/scheduled-maintenances.json", "maintenances",
             f"Scheduled maintenances ({_SV})"),
    StatusOp("get", f"{_V2}/scheduled-maintenances/upcoming.json", "upcoming",
             f"Upcoming maintenances ({_SV})"),
    StatusOp("get", f"{_V2}/scheduled-maintenances/active.json", "active",
             f"Maintenances in progress ({_SV})"),
    StatusOp("get", f"{_V2}/uptime.json", "uptime",
             "Daily uptime per component over `days` (1-366, default 90)",
             errors=(("invalid_days", 400),)),
    StatusOp("get", "/api/v5/system/status", "okx",
             "Maintenance windows in OKX's system-status format (`state` filter)",
             errors=(("invalid_state", 400),)),
    StatusOp("get", "/status", "page", "The status page (HTML)", media="text/html"),
    StatusOp("get", "/status/feed.atom", "feed", "Incidents and maintenances as an Atom feed",
             media="application/atom+xml"),
    StatusOp("post", "/admin/status/incidents", "open_incident", "Open an incident", "admin",
             schemas.OpenIncident, status=201,
             errors=(("unknown_component", 422), ("invalid_incident_status", 422),
                     ("invalid_impact", 422), *_OPERATOR_STATUS)),
    StatusOp("post", "/admin/status/incidents/{id}/updates", "update_incident",
             "Post an update to an incident", "admin", schemas.IncidentUpdate,
             errors=_INCIDENT_EDIT),
    StatusOp("post", "/admin/status/incidents/{id}/resolve", "resolve_incident",
             "Resolve an incident", "admin", schemas.ResolveIncident, errors=_INCIDENT_EDIT),
    StatusOp("post", "/admin/status/maintenances", "schedule", "Schedule a maintenance window",
             "admin", schemas.ScheduleMaintenance, status=201,
             errors=(("no_components", 422), ("invalid_window", 422),
                     ("window_in_past", 422), ("unknown_component", 422))),
    StatusOp("post", "/admin/status/maintenances/{id}/start", "start",
             "Start a scheduled maintenance", "admin", schemas.MaintenanceStep, errors=_STEP),
    StatusOp("post", "/admin/status/maintenances/{id}/verify", "verify",
             "Mark a maintenance as verifying", "admin", schemas.MaintenanceStep, errors=_STEP),
    StatusOp("post", "/admin/status/maintenances/{id}/complete", "complete",
             "Complete a maintenance", "admin", schemas.MaintenanceStep, errors=_STEP),
    StatusOp("post", "/admin/status/components", "add_component", "Add a component", "admin",
             schemas.NewComponent, status=201,
             errors=(("invalid_name", 422), ("invalid_group", 422),
                     ("invalid_description", 422))),
    StatusOp("get", "/admin/status/components", "list_components",
             "Every component with its derived and operator status", "admin"),
    StatusOp("put", "/admin/status/components/{id}/status", "set_status",
             "Set a component's status (never below what the engine's state shows)", "admin",
             schemas.SetComponentStatus,
             errors=(("component_not_found", 404), *_OPERATOR_STATUS)),
    StatusOp("post", "/admin/status/subscribers", "add_subscriber",
             "Add a webhook subscriber (the signing secret is shown once)", "admin",
             schemas.NewSubscriber, status=201,
             errors=(("invalid_url", 422), ("invalid_secret", 422), ("unknown_component", 422))),
    StatusOp("get", "/admin/status/subscribers", "list_subscribers",
             "Webhook subscribers with delivery counts", "admin"),
    StatusOp("delete", "/admin/status/subscribers/{id}", "remove_subscriber",
             "Remove a webhook subscriber", "admin", status=204,
             errors=(("subscriber_not_found", 404),)),
    StatusOp("post", "/admin/status/subscribers/{id}/enable", "enable_subscriber",
             "Re-enable a subscriber disabled after failed deliveries", "admin",
             errors=(("subscriber_not_found", 404),)),
)
#: what every admin op can answer besides its own codes
ADMIN_ERRORS: tuple[tuple[str, int], ...] = (
    ("unauthorized", 401), ("invalid_json", 400), ("invalid_request", 422),
    ("body_too_large", 413), ("status_unavailable", 503), ("status_conflict", 409))


def status_routes(runtime: StatusRuntime, admin_token: str) -> list[BaseRoute]:
    """All status routes, to mount in any Starlette app that also runs `runtime.running()`."""
    if not admin_token:
        raise ValueError("admin_token must not be empty")
    service = runtime.service
    expected = f"Bearer {admin_token}".encode()

    def admin(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def guarded(request: Request) -> Response:
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return error_response(
                    "unauthorized",
                    "missing or wrong admin token (Authorization: Bearer <token>)",
                    401,
                )
            return await refusals(handler)(request)

        return guarded

    def public(render: Callable[[Request], Any]) -> Handler:
        @refusals
        async def handler(request: Request) -> Response:
            return json_response(render(request), public=True)

        return handler

    async def write(verb: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Off the event loop: in a cluster a write waits for the shared bucket."""
        return await asyncio.to_thread(service.write, verb, *args, **kwargs)

    def incident_out(i: Incident) -> dict[str, Any]:
        v = service.view()
        return statuspage.incident_json(i, {c.id: c for c in v.components}, v.page["id"], v.now_ms)

    def base_url(request: Request) -> str:
        return service.page["url"] or str(request.base_url).rstrip("/")

    async def uptime(request: Request) -> Response:
        days_raw = request.query_params.get("days", "90")
        days = ascii_int(days_raw, max_digits=3)
        if days is None:
            raise StatusError("invalid_days", "days must be an integer between 1 and 366", 400)
        data = await asyncio.to_thread(service.uptime, days)
        return json_response(statuspage.uptime_json(service.view(), data), public=True)

    async def okx(request: Request) -> Response:
        state = request.query_params.get("state")
        try:
            data = statuspage.okx_system_status(service.view(), state, service.demo)
        except StatusError as exc:
            body = {"code": exc.code, "message": exc.message, "msg": exc.message, "data": []}
            return json_response(body, exc.http_status, public=True)
        return json_response(data, public=True)

    async def page(request: Request) -> Response:
        days = await asyncio.to_thread(service.uptime, 90)
        return HTMLResponse(
            render_page(service.view(), days), headers={"Cache-Control": "no-store"}
        )

    async def feed(request: Request) -> Response:
        return Response(
            render_feed(service.view(), base_url(request)), media_type="application/atom+xml"
        )

    async def open_incident(request: Request) -> Response:
        b = await read_body(request, schemas.OpenIncident)
        inc = await write(service.operator.open_incident,
            b.name,
            b.body,
            b.components,
            status=b.status,
            impact=b.impact,
            component_status=b.component_status,
        )
        return json_response(incident_out(inc), 201)

    async def update_incident(request: Request) -> Response:
        b = await read_body(request, schemas.IncidentUpdate)
        inc = await write(service.operator.update_incident,
            request.path_params["id"],
            b.status,
            b.body,
            impact=b.impact,
            component_status=b.component_status,
        )
        return json_response(incident_out(inc))

    async def resolve_incident(request: Request) -> Response:
        b = await read_body(request, schemas.ResolveIncident)
        return json_response(
            incident_out(await write(service.operator.update_incident, request.path_params["id"], "resolved", b.body))
        )

    async def schedule(request: Request) -> Response:
        b = await read_body(request, schemas.ScheduleMaintenance)
        m = await write(service.operator.schedule_maintenance,
            b.name,
            b.body,
            b.components,
            schemas.to_ms(b.scheduled_for),
            schemas.to_ms(b.scheduled_until),
        )
        return json_response(incident_out(m), 201)

    def step(action: Callable[[str, str], Incident]) -> Handler:
        async def handler(request: Request) -> Response:
            b = await read_body(request, schemas.MaintenanceStep)
            return json_response(
                incident_out(await write(action, request.path_params["id"], b.body))
            )

        return handler

    async def add_component(request: Request) -> Response:
        b = await read_body(request, schemas.NewComponent)
        c = await write(service.operator.add_component, b.name, b.group, b.description)
        return json_response(statuspage.component_json(c, service.page["id"]), 201)

    async def list_components(request: Request) -> Response:
        return json_response([msgspec.to_builtins(c) for c in service.view().components])

    async def set_status(request: Request) -> Response:
        b = await read_body(request, schemas.SetComponentStatus)
        c = await write(service.operator.set_component_status, request.path_params["id"], b.status, b.note)
        return json_response(msgspec.to_builtins(c))

    async def add_subscriber(request: Request) -> Response:
        b = await read_body(request, schemas.NewSubscriber)
        url = httpx_url(b.url)
        sub = await write(service.subscribers.add, url, b.components, b.secret)
        return json_response(_subscriber_json(sub, secret=True), 201)

    async def list_subscribers(request: Request) -> Response:
        pending = runtime.webhooks.pending()
        return json_response(
            [_subscriber_json(s, pending.get(s.id, 0)) for s in service.subscribers.list()]
        )

    async def remove_subscriber(request: Request) -> Response:
        await write(service.subscribers.remove, request.path_params["id"])
        return Response(status_code=204)

    async def enable_subscriber(request: Request) -> Response:
        return json_response(
            _subscriber_json(await write(service.subscribers.set_enabled, request.path_params["id"], True))
        )

    handlers: dict[str, Handler] = {
        "summary": public(lambda r: statuspage.summary_json(service.view())),
        "status": public(lambda r: statuspage.status_json(service.view())),
        "components": public(lambda r: statuspage.components_json(service.view())),
        "incidents": public(lambda r: statuspage.incidents_json(service.view())),
        "unresolved": public(lambda r: statuspage.incidents_json(service.view(), True)),
        "maintenances": public(lambda r: statuspage.maintenances_json(service.view())),
        "upcoming": public(lambda r: statuspage.maintenances_json(service.view(), "upcoming")),
        "active": public(lambda r: statuspage.maintenances_json(service.view(), "active")),
        "uptime": refusals(uptime),
        "okx": okx,
        "page": page,
        "feed": feed,
        "open_incident": open_incident,
        "update_incident": update_incident,
        "resolve_incident": resolve_incident,
        "schedule": schedule,
        "start": step(service.operator.start_maintenance),
        "verify": step(service.operator.verify_maintenance),
        "complete": step(service.operator.complete_maintenance),
        "add_component": add_component,
        "list_components": list_components,
        "set_status": set_status,
        "add_subscriber": add_subscriber,
        "list_subscribers": list_subscribers,
        "remove_subscriber": remove_subscriber,
        "enable_subscriber": enable_subscriber,
    }
    missing = {op.handler for op in OPS} ^ handlers.keys()
    if missing:
        raise ValueError(f"status route table and handlers differ: {sorted(missing)}")
    routes: list[BaseRoute] = [
        Route(op.path, admin(handlers[op.handler]) if op.auth == "admin" else handlers[op.handler],
              methods=[op.method.upper()])
        for op in OPS
    ]
    routes.append(WebSocketRoute("/ws/status", runtime.hub.endpoint))
    return routes


def httpx_url(url: str) -> str:
    """Accept only absolute http(s) URLs with a host as webhook targets."""
    import httpx

    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise StatusError("invalid_url", f"not a valid URL: {url!r}", 422) from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise StatusError(
            "invalid_url", "webhook URL must be absolute http:// or https:// with a host", 422
        )
    return str(parsed)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(code, str(exc.detail), exc.status_code)


def create_app(
    service: StatusService,
    admin_token: str,
    *,
    tick_interval_s: float = 0.25,
    retry: RetryPolicy | None = None,
    egress: Egress | None = None,
) -> Starlette:
    """A standalone status server (the gateway mounts `status_routes` in its own app instead)."""
    runtime = StatusRuntime(service, tick_interval_s=tick_interval_s, retry=retry, egress=egress)
    app = Starlette(
        routes=status_routes(runtime, admin_token),
        lifespan=runtime.lifespan,
        exception_handlers={HTTPException: _http_error},
    )
    app.state.status_runtime = runtime
    return app
