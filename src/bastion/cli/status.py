"""`bastion status ...`: the operator's words on the status page, over the operator HTTP API.

Talks HTTP rather than opening the database so it works against a remote node and goes through
the same validation and rules (e.g. a halted market cannot be reported operational).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console

status_app = typer.Typer(
    help="Status page: incidents and scheduled maintenance.", no_args_is_help=True
)
incident_app = typer.Typer(help="Open, update and resolve incidents.", no_args_is_help=True)
maintenance_app = typer.Typer(
    help="Schedule, start and complete maintenance.", no_args_is_help=True
)
status_app.add_typer(incident_app, name="incident")
status_app.add_typer(maintenance_app, name="maintenance")

console = Console()
err = Console(stderr=True)

Url = Annotated[
    str, typer.Option("--url", envvar="BASTION_URL", help="Base URL of the Bastion server.")
]
Token = Annotated[
    str,
    typer.Option(
        "--admin-token", envvar="BASTION_ADMIN_TOKEN", help="Operator token.", show_default=False
    ),
]
Components = Annotated[
    list[str] | None, typer.Option("--component", "-c", help="Affected component id (repeatable).")
]
BodyText = Annotated[str, typer.Option("--body", "-b", help="What users should read.")]
DEFAULT_URL = "http://127.0.0.1:8000"


def _call(url: str, token: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST to the operator API; print the refusal and exit 1 on any error."""
    if not token:
        err.print(
            "[red]error[/red] missing admin token: pass --admin-token or set BASTION_ADMIN_TOKEN"
        )
        raise typer.Exit(2)
    try:
        resp = httpx.post(
            url.rstrip("/") + path,
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
    except httpx.HTTPError as exc:
        err.print(f"[red]error[/red] cannot reach {url}: {exc}")
        raise typer.Exit(1) from None
    try:
        data = resp.json()
    except ValueError:
        data = {"code": "bad_response", "message": resp.text[:200]}
    if resp.status_code >= 400:
        err.print(f"[red]error[/red] {resp.status_code} {data.get('code')}: {data.get('message')}")
        raise typer.Exit(1)
    return data  # type: ignore[no-any-return]


def _show(kind: str, data: dict[str, Any]) -> None:
    console.print(f"{kind} [bold]{data['id']}[/bold] {data['name']!r}: {data['status']}")


def _when(text: str) -> int | str:
    """Unix ms, or an ISO time (naive times are refused by the server, so add an offset)."""
    if text.isdigit():
        return int(text)
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is neither Unix milliseconds nor an ISO 8601 time"
        ) from None
    return text


@incident_app.command("open")
def incident_open(
    name: Annotated[str, typer.Argument(help="Incident title.")],
    body: BodyText,
    component: Components = None,
    impact: Annotated[str | None, typer.Option(help="none, minor, major or critical.")] = None,
    status: Annotated[
        str, typer.Option(help="investigating, identified or monitoring.")
    ] = "investigating",
    component_status: Annotated[
        str | None, typer.Option(help="Set the affected components to this status.")
    ] = None,
    url: Url = DEFAULT_URL,
    admin_token: Token = "",
) -> None:
    """Open an incident."""
    payload: dict[str, Any] = {
        "name": name,
        "body": body,
        "components": component or [],
        "status": status,
    }
    if impact:
        payload["impact"] = impact
    if component_status:
        payload["component_status"] = component_status
    _show("incident", _call(url, admin_token, "/admin/status/incidents", payload))


@incident_app.command("update")
def incident_update(
    incident_id: Annotated[str, typer.Argument(help="Incident id.")],
    body: BodyText,
    status: Annotated[
        str, typer.Option(help="investigating, identified, monitoring, resolved or postmortem.")
    ],
    impact: Annotated[str | None, typer.Option(help="none, minor, major or critical.")] = None,
    component_status: Annotated[
        str | None, typer.Option(help="Set the affected components to this status.")
    ] = None,
    url: Url = DEFAULT_URL,
    admin_token: Token = "",
) -> None:
    """Post an update to an incident."""
    payload: dict[str, Any] = {"status": status, "body": body}
    if impact:
        payload["impact"] = impact
    if component_status:
        payload["component_status"] = component_status
    _show(
        "incident",
        _call(url, admin_token, f"/admin/status/incidents/{incident_id}/updates", payload),
    )


@incident_app.command("resolve")
def incident_resolve(
    incident_id: Annotated[str, typer.Argument(help="Incident id.")],
    body: BodyText,
    url: Url = DEFAULT_URL,
    admin_token: Token = "",
) -> None:
    """Resolve an incident (refused while one of its markets is halted)."""
    _show(
        "incident",
        _call(url, admin_token, f"/admin/status/incidents/{incident_id}/resolve", {"body": body}),
    )


@maintenance_app.command("schedule")
def maintenance_schedule(
    name: Annotated[str, typer.Argument(help="Maintenance title.")],
    body: BodyText,
    start: Annotated[str, typer.Option(help="Start: Unix ms or ISO 8601 with offset.")],
    end: Annotated[str, typer.Option(help="Expected end: Unix ms or ISO 8601 with offset.")],
    component: Components = None,
    url: Url = DEFAULT_URL,
    admin_token: Token = "",
) -> None:
    """Announce a maintenance window; clients get advance warnings as it approaches."""
    payload = {
        "name": name,
        "body": body,
        "components": component or [],
        "scheduled_for": _when(start),
        "scheduled_until": _when(end),
    }
    _show("maintenance", _call(url, admin_token, "/admin/status/maintenances", payload))


def _step(action: str, maintenance_id: str, body: str, url: str, token: str) -> None:
    data = _call(
        url, token, f"/admin/status/maintenances/{maintenance_id}/{action}", {"body": body}
    )
    _show("maintenance", data)


@maintenance_app.command("start")
def maintenance_start(
    maintenance_id: Annotated[str, typer.Argument(help="Maintenance id.")],
    body: Annotated[str, typer.Option("--body", "-b")] = "",
    url: Url = DEFAULT_URL,
    admin_token: Token = "",
) -> None:
    """Start a scheduled maintenance now."""
    _step("start", maintenance_id, body, url, admin_token)


@maintenance_app.command("complete")
def maintenance_complete(
    maintenance_id: Annotated[str, typer.Argument(help="Maintenance id.")],
    body: Annotated[str, typer.Option("--body", "-b")] = "",
    url: Url = DEFAULT_URL,
    admin_token: Token = "",
) -> None:
    """Mark a maintenance completed."""
    _step("complete", maintenance_id, body, url, admin_token)
