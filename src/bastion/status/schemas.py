"""Request bodies of the operator API; msgspec validates them and names the offending field."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from bastion.status.model import ComponentStatus, Impact, IncidentStatus

Name = Annotated[str, Meta(min_length=1, max_length=200)]
Body = Annotated[str, Meta(min_length=1, max_length=5000)]
OptionalBody = Annotated[str, Meta(max_length=5000)]
Note = Annotated[str, Meta(max_length=500)]
ComponentIds = Annotated[
    list[Annotated[str, Meta(min_length=1, max_length=100)]], Meta(max_length=200)
]
# Either Unix milliseconds or an RFC 3339 time with an explicit offset; never a naive time.
Instant = Annotated[int, Meta(ge=0, le=32_503_680_000_000)] | Annotated[datetime, Meta(tz=True)]


class _Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class OpenIncident(_Strict):
    name: Name
    body: Body
    components: ComponentIds = []
    status: Literal["investigating", "identified", "monitoring"] = "investigating"
    impact: Impact | None = None
    component_status: ComponentStatus | None = None


class IncidentUpdate(_Strict):
    status: IncidentStatus
    body: Body
    impact: Impact | None = None
    component_status: ComponentStatus | None = None


class ResolveIncident(_Strict):
    body: Body


class ScheduleMaintenance(_Strict):
    name: Name
    body: Body
    components: Annotated[ComponentIds, Meta(min_length=1)]
    scheduled_for: Instant
    scheduled_until: Instant


class MaintenanceStep(_Strict):
    body: OptionalBody = ""


class NewComponent(_Strict):
    name: Annotated[str, Meta(min_length=1, max_length=100)]
    group: Annotated[str, Meta(min_length=1, max_length=100)] | None = None
    description: Note = ""


class SetComponentStatus(_Strict):
    status: ComponentStatus
    note: Note = ""


class NewSubscriber(_Strict):
    url: Annotated[str, Meta(min_length=8, max_length=2000)]
    components: ComponentIds | None = None
    secret: Annotated[str, Meta(min_length=16, max_length=256)] | None = None


def to_ms(value: int | datetime) -> int:
    """Unix milliseconds from either accepted time form."""
    return value if isinstance(value, int) else int(value.timestamp() * 1000)


class ErrorBody(msgspec.Struct):
    """Every refusal of the status API: a stable lower-case `code` and a human `message`."""

    code: str
    message: str
