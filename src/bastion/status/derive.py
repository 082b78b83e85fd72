"""Pure rules that turn what the engine, node and wallets report into component statuses.

Kept free of I/O and clocks so each rule is a plain function the unit tests can pin down.
"""

from __future__ import annotations

from dataclasses import dataclass

from bastion.status.errors import StatusError
from bastion.status.model import (
    IMPACT_RANK,
    MARKET_MODES,
    SEVERITY,
    AdvisoryPhase,
    ClientAction,
    Component,
    ComponentStatus,
    Impact,
)


@dataclass(frozen=True)
class Thresholds:
    """How long a signal may be bad before users are told; seconds, per the incident reviews."""

    ack_timeout_ms: int = 3_000
    max_lag_ms: int = 2_000
    withdrawal_stuck_ms: int = 15 * 60_000


@dataclass
class Signals:
    """Latest raw observations; the service stores them, the rules read them."""

    market_modes: dict[str, tuple[str, str]]
    last_ack_ms: int | None = None
    lag_ms: int = 0
    withdrawals_pending_since: dict[str, int | None] | None = None
    #: per asset, from the withdrawal pipeline: (depth, oldest queued since ms, why delayed)
    withdrawal_queues: dict[str, tuple[int, int, str]] | None = None
    #: why the node stopped accepting commands (journal I/O error...); "" while it runs
    node_failure: str = ""


def check_mode(mode: str) -> str:
    """Reject market modes the rules do not know, so a typo cannot read as `open`."""
    if mode not in MARKET_MODES:
        raise StatusError(
            "invalid_market_mode",
            f"unknown market mode {mode!r}; expected one of {', '.join(MARKET_MODES)}",
            422,
        )
    return mode


def market_mode_status(mode: str, maintenance: bool) -> ComponentStatus:
    """Status of a market component for its engine mode.

    `halted` is an emergency stop and always a major outage, maintenance or not. `closed` is a
    planned stop: maintenance when a maintenance covers it, otherwise a major outage. The
    restricted modes keep cancels working, so they are a partial outage unless planned.
    """
    check_mode(mode)
    if mode == "open":
        return "operational"
    if mode == "halted":
        return "major_outage"
    if maintenance:
        return "under_maintenance"
    return "major_outage" if mode == "closed" else "partial_outage"


def node_health_reason(now_ms: int, last_ack_ms: int | None, lag_ms: int, t: Thresholds) -> str:
    """Why the node degrades matching right now, or "" when it does not."""
    if last_ack_ms is not None and now_ms - last_ack_ms > t.ack_timeout_ms:
        return f"journal has not acknowledged a write for {(now_ms - last_ack_ms) / 1000:.1f} s"
    if lag_ms > t.max_lag_ms:
        return f"engine lags the journal by {lag_ms} ms"
    return ""


def withdrawal_reason(now_ms: int, pending_since_ms: int | None, t: Thresholds) -> str:
    """Why withdrawals of an asset count as stuck, or "" when they flow."""
    if pending_since_ms is None:
        return ""
    age = now_ms - pending_since_ms
    if age > t.withdrawal_stuck_ms:
        return f"oldest pending withdrawal has waited {age // 60_000} min"
    return ""


def withdrawal_queue_reason(asset: str, now_ms: int, queue: tuple[int, int, str] | None
                            ) -> str:
    """"Withdrawals of BTC are delayed (<why>); <n> queued, oldest waiting <age>", or "" when
    the pipeline says they flow."""
    if queue is None or not queue[2]:
        return ""
    depth, since_ms, why = queue
    age_s = max(0, now_ms - since_ms) // 1000 if depth else 0
    age = f"{age_s // 60} min {age_s % 60} s" if age_s >= 60 else f"{age_s} s"
    return (f"Withdrawals of {asset} are delayed ({why}); {depth} queued"
            + (f", oldest waiting {age}" if depth else ""))


def derive_component(
    c: Component, s: Signals, now_ms: int, maintenance: bool, t: Thresholds
) -> tuple[ComponentStatus, str]:
    """The automatic status of one component and a short reason a human can read."""
    if c.kind == "market" and s.node_failure:
        return "major_outage", f"trading is stopped: {s.node_failure}"
    if c.kind == "market" and c.key in s.market_modes:
        mode, why = s.market_modes[c.key]
        status = market_mode_status(mode, maintenance)
        if status != "operational":
            return status, f"market {c.key} is {mode}" + (f": {why}" if why else "")
    if maintenance:
        return "under_maintenance", "scheduled maintenance in progress"
    if c.kind == "market":
        reason = node_health_reason(now_ms, s.last_ack_ms, s.lag_ms, t)
        if reason:
            return "degraded_performance", reason
    if c.kind == "wallet" and s.withdrawal_queues:
        reason = withdrawal_queue_reason(c.key, now_ms, s.withdrawal_queues.get(c.key))
        if reason:
            return "degraded_performance", reason
    if c.kind == "wallet" and s.withdrawals_pending_since:
        reason = withdrawal_reason(now_ms, s.withdrawals_pending_since.get(c.key), t)
        if reason:
            return "degraded_performance", reason
    return "operational", ""


def check_operator_status(c: Component, requested: ComponentStatus) -> None:
    """An operator may add detail (a worse status) but never claim better than the facts."""
    if SEVERITY[requested] >= SEVERITY[c.derived]:
        return
    if c.kind == "market" and c.derived == "major_outage":
        raise StatusError(
            "market_halted",
            f"{c.name} is a major outage because {c.derived_reason}; it cannot be reported as {requested}",
            409,
        )
    raise StatusError(
        "below_derived_status",
        f"{c.name} is {c.derived} because {c.derived_reason}; an operator cannot report it as {requested}",
        409,
    )


# Kraken-style advance warnings: (ms before start, phase, recommended client action).
ADVISORY_STEPS: tuple[tuple[int, AdvisoryPhase, ClientAction], ...] = (
    (30_000, "final_warning_30s", "stop_new_orders"),
    (5 * 60_000, "imminent_5m", "cancel_open_orders"),
    (30 * 60_000, "approaching_30m", "reduce_activity"),
    (24 * 3_600_000, "reminder_24h", "continue"),
)


def advisory(now_ms: int, starts_ms: int, status: str) -> tuple[AdvisoryPhase, ClientAction] | None:
    """Advance-warning phase and recommended client action of a maintenance, None once over."""
    if status in ("in_progress", "verifying"):
        return "in_progress", "disconnect_and_wait"
    if status != "scheduled":
        return None
    if now_ms >= starts_ms:
        return "final_warning_30s", "stop_new_orders"
    for before, phase, action in ADVISORY_STEPS:
        if starts_ms - now_ms <= before:
            return phase, action
    return "announced", "continue"


def impact_for(status: ComponentStatus) -> Impact:
    """Statuspage impact that matches a component status."""
    return {
        "operational": "none",
        "under_maintenance": "none",
        "degraded_performance": "minor",
        "partial_outage": "major",
        "major_outage": "critical",
    }[status]  # type: ignore[return-value]


IMPACT_LEVELS: dict[Impact, int] = {"none": 0, "minor": 1, "major": 2, "critical": 3}
INDICATOR_TEXT: dict[str, str] = {
    "none": "All Systems Operational",
    "minor": "Minor Service Outage",
    "major": "Partial System Outage",
    "critical": "Major System Outage",
}


def page_indicator(
    statuses: list[ComponentStatus], open_impacts: list[Impact]
) -> tuple[Impact, str]:
    """Overall Statuspage indicator: the worst of component statuses and open incident impacts."""
    level = max(
        [IMPACT_RANK[impact_for(s)] for s in statuses]
        + [IMPACT_RANK[i] for i in open_impacts]
        + [0]
    )
    if level == 0 and "under_maintenance" in statuses:
        return "minor", "Service Under Maintenance"
    name: Impact = next(k for k, v in IMPACT_LEVELS.items() if v == level)
    return name, INDICATOR_TEXT[name]
