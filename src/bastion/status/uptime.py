"""Uptime per component per UTC day from its status history.

Weights follow Statuspage: a major outage counts fully as downtime, a partial outage as 30%,
degraded performance and maintenance not at all. Time before a component existed is no data,
not uptime.
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from bastion.status.model import SEVERITY, ComponentStatus

DAY_MS = 86_400_000
DOWN_WEIGHT: dict[str, float] = {"major_outage": 1.0, "partial_outage": 0.3}


class DayUptime(msgspec.Struct, kw_only=True):
    date: str
    uptime: float | None
    worst: ComponentStatus | None
    observed_ms: int
    down_ms: int


def window_start(now_ms: int, days: int) -> int:
    """Midnight UTC of the first of `days` days ending today."""
    return (now_ms // DAY_MS - (days - 1)) * DAY_MS


def daily_uptime(
    initial: str | None, changes: list[tuple[int, str]], now_ms: int, days: int
) -> list[DayUptime]:
    """Split the status timeline into UTC days, oldest first; `initial` holds at window start."""
    start = window_start(now_ms, days)
    observed = [0] * days
    down = [0.0] * days
    worst: list[str | None] = [None] * days
    points = [(start, initial), *((max(t, start), s) for t, s in changes), (now_ms, None)]
    for (t0, status), (t1, _) in zip(points, points[1:], strict=False):
        if status is None or t1 <= t0:
            continue
        t = t0
        while t < t1:
            day = (t - start) // DAY_MS
            seg_end = min(t1, start + (day + 1) * DAY_MS)
            observed[day] += seg_end - t
            down[day] += (seg_end - t) * DOWN_WEIGHT.get(status, 0.0)
            prev = worst[day]
            if prev is None or SEVERITY[status] > SEVERITY[prev]:
                worst[day] = status
            t = seg_end
    return [
        DayUptime(
            date=datetime.fromtimestamp((start + d * DAY_MS) / 1000, UTC).strftime("%Y-%m-%d"),
            uptime=(100.0 * (1 - down[d] / observed[d])) if observed[d] else None,
            worst=worst[d],  # type: ignore[arg-type]
            observed_ms=observed[d],
            down_ms=round(down[d]),
        )
        for d in range(days)
    ]


def overall(days: list[DayUptime]) -> float | None:
    """Uptime percentage over all observed time in the window."""
    seen = sum(d.observed_ms for d in days)
    return 100.0 * (1 - sum(d.down_ms for d in days) / seen) if seen else None
