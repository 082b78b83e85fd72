"""Derivation rules of the status service: engine modes, node health, withdrawals, maintenance,
operator limits, auto-opened incidents, advance warnings, durability and uptime."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.status import StatusError, StatusService, Thresholds, statuspage
from bastion.status.derive import advisory, market_mode_status
from bastion.status.uptime import DAY_MS
from status_support import ManualClock

MIN = 60_000
HOUR = 3_600_000


@pytest.fixture
def clock() -> ManualClock:
    clock = ManualClock()
    clock.advance(12 * HOUR)  # midday, so "today" has observed time
    return clock


@pytest.fixture
def svc(tmp_path: Path, clock: ManualClock) -> StatusService:
    service = StatusService(tmp_path / "status.db", clock=clock)
    service.tracker.register_market("BTC-USDT")
    service.tracker.register_market("ETH-USDT")
    service.tracker.register_asset("BTC")
    return service


def status_of(svc: StatusService, cid: str) -> str:
    return svc.component(cid).status


def open_incidents(svc: StatusService) -> list:
    return [i for i in svc.view().incidents if i.open]


@pytest.mark.parametrize(
    ("mode", "maintenance", "expected"),
    [
        ("open", False, "operational"),
        ("open", True, "operational"),
        ("halted", False, "major_outage"),
        ("halted", True, "major_outage"),
        ("cancel_only", False, "partial_outage"),
        ("post_only", False, "partial_outage"),
        ("recovery", False, "partial_outage"),
        ("cancel_only", True, "under_maintenance"),
        ("post_only", True, "under_maintenance"),
        ("recovery", True, "under_maintenance"),
        ("closed", False, "major_outage"),
        ("closed", True, "under_maintenance"),
    ],
)
def test_mode_to_status(mode: str, maintenance: bool, expected: str) -> None:
    assert market_mode_status(mode, maintenance) == expected


@pytest.mark.parametrize(
    ("mode", "status", "impact"),
    [
        ("halted", "major_outage", "critical"),
        ("cancel_only", "partial_outage", "major"),
        ("post_only", "partial_outage", "major"),
        ("recovery", "partial_outage", "major"),
        ("closed", "major_outage", "critical"),
    ],
)
def test_mode_change_opens_incident(
    svc: StatusService, mode: str, status: str, impact: str
) -> None:
    events: list[dict] = []
    svc.board.subscribe(lambda ch: events.append(statuspage.change_json(ch, svc.page["id"])))
    svc.tracker.observe_market_mode("BTC-USDT", mode, "drill")
    assert status_of(svc, "market-btc-usdt") == status
    assert status_of(svc, "market-eth-usdt") == "operational"
    (inc,) = open_incidents(svc)
    assert inc.auto and inc.status == "investigating" and inc.impact == impact
    assert inc.component_ids == ["market-btc-usdt"]
    assert f"is {mode}: drill" in inc.updates[0].body
    assert [e["type"] for e in events] == ["component.updated", "incident.created"]
    indicator = statuspage.status_json(svc.view())["status"]["indicator"]
    assert indicator == impact


def test_unknown_mode_is_refused_and_changes_nothing(svc: StatusService) -> None:
    with pytest.raises(StatusError) as exc:
        svc.tracker.observe_market_mode("BTC-USDT", "paused")
    assert exc.value.code == "invalid_market_mode"
    assert status_of(svc, "market-btc-usdt") == "operational"
    with pytest.raises(StatusError) as exc:
        svc.tracker.observe_market_mode("", "halted")
    assert exc.value.code == "invalid_market"


def test_resume_moves_auto_incident_to_monitoring_and_relapse_back(
    svc: StatusService, clock: ManualClock
) -> None:
    svc.tracker.observe_market_mode("BTC-USDT", "halted", "guard tripped")
    clock.advance(MIN)
    svc.tracker.observe_market_mode("BTC-USDT", "open")
    (inc,) = open_incidents(svc)
    assert status_of(svc, "market-btc-usdt") == "operational"
    assert inc.status == "monitoring"
    clock.advance(MIN)
    svc.tracker.observe_market_mode("BTC-USDT", "cancel_only", "again")
    (inc,) = open_incidents(svc)
    assert inc.status == "investigating" and "back" in inc.updates[-1].body
    assert [u.status for u in inc.updates] == ["investigating", "monitoring", "investigating"]


def test_escalation_raises_impact(svc: StatusService) -> None:
    svc.tracker.observe_market_mode("BTC-USDT", "post_only", "reopening")
    assert open_incidents(svc)[0].impact == "major"
    svc.tracker.observe_market_mode("BTC-USDT", "halted", "worse")
    (inc,) = open_incidents(svc)
    assert inc.impact == "critical"


def test_operator_cannot_mark_halted_market_operational(svc: StatusService) -> None:
    svc.tracker.observe_market_mode("BTC-USDT", "halted", "bad funding index")
    (inc,) = open_incidents(svc)
    for attempt in (
        lambda: svc.operator.set_component_status("market-btc-usdt", "operational"),
        lambda: svc.operator.set_component_status("market-btc-usdt", "degraded_performance"),
        lambda: svc.operator.set_component_status("market-btc-usdt", "under_maintenance"),
        lambda: svc.operator.update_incident(inc.id, "monitoring", "fixed?", component_status="operational"),
        lambda: svc.operator.update_incident(inc.id, "resolved", "all good"),
    ):
        with pytest.raises(StatusError) as exc:
            attempt()
        assert exc.value.code == "market_halted" and exc.value.http_status == 409
    assert status_of(svc, "market-btc-usdt") == "major_outage"
    assert svc.incident(inc.id).status == "investigating"
    assert len(svc.incident(inc.id).updates) == 1
    # Adding detail is fine: an update with words, and the status it already has.
    svc.operator.update_incident(inc.id, "identified", "Funding index guard tripped; rolling back.")
    svc.operator.set_component_status("market-btc-usdt", "major_outage", "rolling back")
    assert svc.incident(inc.id).status == "identified"


def test_operator_adds_detail_and_clears_it(svc: StatusService) -> None:
    svc.operator.set_component_status("rest-api", "degraded_performance", "slow responses from one zone")
    assert status_of(svc, "rest-api") == "degraded_performance"
    (inc,) = open_incidents(svc)
    assert inc.component_ids == ["rest-api"]
    svc.operator.set_component_status("rest-api", "operational")
    assert status_of(svc, "rest-api") == "operational"


def test_stuck_withdrawals_degrade_wallet_and_cannot_be_hidden(
    svc: StatusService, clock: ManualClock
) -> None:
    svc.tracker.observe_withdrawals("BTC", 0)
    assert status_of(svc, "wallet-btc") == "operational"
    clock.advance(14 * MIN)
    svc.tracker.tick()
    assert status_of(svc, "wallet-btc") == "operational"
    clock.advance(2 * MIN)  # never re-reported: the oldest pending keeps ageing
    svc.tracker.tick()
    comp = svc.component("wallet-btc")
    assert comp.status == "degraded_performance"
    assert "16 min" in comp.derived_reason
    with pytest.raises(StatusError) as exc:
        svc.operator.set_component_status("wallet-btc", "operational")
    assert exc.value.code == "below_derived_status"
    svc.tracker.observe_withdrawals("BTC", None)
    assert status_of(svc, "wallet-btc") == "operational"
    assert status_of(svc, "market-btc-usdt") == "operational"


def test_journal_silence_and_lag_degrade_matching(tmp_path: Path, clock: ManualClock) -> None:
    svc = StatusService(
        tmp_path / "s.db", clock=clock, thresholds=Thresholds(ack_timeout_ms=3000, max_lag_ms=500)
    )
    svc.tracker.register_market("BTC-USDT")
    svc.tracker.register_market("ETH-USDT")
    svc.tracker.observe_node_health(last_ack_ms=clock(), lag_ms=0)
    clock.advance(3000)
    svc.tracker.tick()
    assert status_of(svc, "market-btc-usdt") == "operational"
    clock.advance(1)  # the node went silent: no report, just time passing
    svc.tracker.tick()
    for cid in ("market-btc-usdt", "market-eth-usdt"):
        comp = svc.component(cid)
        assert comp.status == "degraded_performance"
        assert "journal has not acknowledged" in comp.derived_reason
    (inc,) = open_incidents(svc)  # one incident for the shared cause, not one per market
    assert sorted(inc.component_ids) == ["market-btc-usdt", "market-eth-usdt"]
    assert inc.impact == "minor"
    svc.tracker.observe_node_health(last_ack_ms=clock(), lag_ms=0)
    assert status_of(svc, "market-btc-usdt") == "operational"
    svc.tracker.observe_node_health(last_ack_ms=clock(), lag_ms=501)
    assert "lags the journal by 501 ms" in svc.component("market-eth-usdt").derived_reason
    assert status_of(svc, "rest-api") == "operational"


def test_maintenance_turns_restricted_mode_into_maintenance(
    svc: StatusService, clock: ManualClock
) -> None:
    now = clock()
    m = svc.operator.schedule_maintenance(
        "Engine upgrade", "Upgrade.", ["market-btc-usdt"], now + 10 * MIN, now + 70 * MIN
    )
    svc.tracker.observe_market_mode("BTC-USDT", "cancel_only", "pre-upgrade")
    assert status_of(svc, "market-btc-usdt") == "partial_outage"  # not started: unplanned
    (unplanned,) = open_incidents(svc)
    svc.tracker.observe_market_mode("BTC-USDT", "open")
    svc.operator.update_incident(unplanned.id, "resolved", "Mode changed too early; reverted.")

    svc.operator.start_maintenance(m.id)
    assert status_of(svc, "market-btc-usdt") == "under_maintenance"
    for mode in ("cancel_only", "post_only", "recovery", "closed"):
        svc.tracker.observe_market_mode("BTC-USDT", mode, "upgrade")
        assert status_of(svc, "market-btc-usdt") == "under_maintenance"
    svc.tracker.observe_market_mode("BTC-USDT", "halted", "upgrade broke")
    assert status_of(svc, "market-btc-usdt") == "major_outage"  # a halt is never maintenance
    svc.tracker.observe_market_mode("BTC-USDT", "post_only", "reopening")
    assert not open_incidents(svc)  # covered by the maintenance
    assert status_of(svc, "market-eth-usdt") == "operational"

    svc.operator.verify_maintenance(m.id)
    assert status_of(svc, "market-btc-usdt") == "under_maintenance"
    svc.operator.complete_maintenance(m.id, "Done.")
    # Maintenance over but the market is still restricted: that is now an unplanned outage.
    assert status_of(svc, "market-btc-usdt") == "partial_outage"
    (overrun,) = open_incidents(svc)
    assert overrun.auto and overrun.component_ids == ["market-btc-usdt"]


def test_maintenance_transitions_are_checked(svc: StatusService, clock: ManualClock) -> None:
    now = clock()
    m = svc.operator.schedule_maintenance("W", "x", ["wallet-btc"], now + HOUR, now + 2 * HOUR)
    for bad in (svc.operator.complete_maintenance, svc.operator.verify_maintenance):
        with pytest.raises(StatusError) as exc:
            bad(m.id)
        assert exc.value.code == "invalid_transition"
    with pytest.raises(StatusError) as exc:
        svc.operator.schedule_maintenance("W", "x", ["nope"], now + HOUR, now + 2 * HOUR)
    assert exc.value.code == "unknown_component"
    with pytest.raises(StatusError) as exc:
        svc.operator.schedule_maintenance("W", "x", ["rest-api"], now + HOUR, now + HOUR)
    assert exc.value.code == "invalid_window"
    with pytest.raises(StatusError) as exc:
        svc.operator.start_maintenance("missing")
    assert exc.value.code == "maintenance_not_found"


def test_advisory_phases_pure() -> None:
    start = 10_000_000_000
    cases = [
        (start - 25 * HOUR, ("announced", "continue")),
        (start - 24 * HOUR, ("reminder_24h", "continue")),
        (start - 31 * MIN, ("reminder_24h", "continue")),
        (start - 30 * MIN, ("approaching_30m", "reduce_activity")),
        (start - 5 * MIN, ("imminent_5m", "cancel_open_orders")),
        (start - 30_000, ("final_warning_30s", "stop_new_orders")),
        (start - 1, ("final_warning_30s", "stop_new_orders")),
    ]
    for now, expected in cases:
        assert advisory(now, start, "scheduled") == expected, now - start
    assert advisory(start, start, "in_progress") == ("in_progress", "disconnect_and_wait")
    assert advisory(start, start, "completed") is None


def test_advance_warnings_are_announced_in_order(svc: StatusService, clock: ManualClock) -> None:
    events: list[dict] = []
    svc.board.subscribe(lambda ch: events.append(statuspage.change_json(ch, svc.page["id"])))
    start = clock() + 25 * HOUR
    m = svc.operator.schedule_maintenance(
        "Upgrade", "Engine upgrade.", ["market-btc-usdt"], start, start + HOUR
    )
    for t in (start - 24 * HOUR, start - 30 * MIN, start - 5 * MIN, start - 30_000, start):
        clock.now_ms = t
        svc.tracker.tick()
        svc.tracker.tick()  # idempotent: a phase is announced once
    seen = [
        (e["type"], (e["scheduled_maintenance"].get("advisory") or {}).get("phase"))
        for e in events
        if e["type"].startswith("maintenance.")
    ]
    assert seen == [
        ("maintenance.scheduled", "announced"),
        ("maintenance.advisory", "reminder_24h"),
        ("maintenance.advisory", "approaching_30m"),
        ("maintenance.advisory", "imminent_5m"),
        ("maintenance.advisory", "final_warning_30s"),
        ("maintenance.in_progress", "in_progress"),  # started by itself at scheduled_for
    ]
    assert svc.incident(m.id).status == "in_progress"
    assert status_of(svc, "market-btc-usdt") == "under_maintenance"


def test_history_survives_restart(tmp_path: Path, clock: ManualClock) -> None:
    path = tmp_path / "status.db"
    svc = StatusService(path, clock=clock)
    svc.tracker.observe_market_mode("BTC-USDT", "halted", "guard", ts_ms=clock() - 5)
    inc = open_incidents(svc)[0]
    svc.operator.update_incident(inc.id, "identified", "We know why.")
    m = svc.operator.schedule_maintenance("M", "b", ["rest-api"], clock() + HOUR, clock() + 2 * HOUR)
    sub = svc.subscribers.add("http://127.0.0.1:9/hook")
    page_id = svc.page["id"]
    svc.close()

    again = StatusService(path, clock=clock)
    assert again.page["id"] == page_id
    assert again.component("market-btc-usdt").status == "major_outage"
    restored = again.incident(inc.id)
    assert [u.body for u in restored.updates][-1] == "We know why."
    assert again.incident(m.id).status == "scheduled"
    assert [s.id for s in again.subscribers.list()] == [sub.id]
    # Still halted after restart: the operator still cannot hide it.
    with pytest.raises(StatusError):
        again.operator.set_component_status("market-btc-usdt", "operational")
    # A journal replay re-sends an older mode change: ignored.
    assert again.tracker.observe_market_mode("BTC-USDT", "open", ts_ms=clock() - 10) is False
    assert again.component("market-btc-usdt").status == "major_outage"
    assert again.tracker.observe_market_mode("BTC-USDT", "open", ts_ms=clock()) is True
    assert again.component("market-btc-usdt").status == "operational"


def test_uptime_per_day(tmp_path: Path) -> None:
    clock = ManualClock()  # midnight UTC
    day0 = clock()
    svc = StatusService(tmp_path / "s.db", clock=clock)
    svc.tracker.register_market("BTC-USDT")
    clock.now_ms = day0 + 6 * HOUR
    svc.tracker.observe_market_mode("BTC-USDT", "halted", "x")
    clock.now_ms = day0 + 12 * HOUR
    svc.tracker.observe_market_mode("BTC-USDT", "open")
    clock.now_ms = day0 + DAY_MS + 20 * HOUR  # 20:00 next day: partial outage through midnight
    svc.tracker.observe_market_mode("BTC-USDT", "post_only", "y")
    clock.now_ms = day0 + 2 * DAY_MS + 4 * HOUR
    svc.tracker.observe_market_mode("BTC-USDT", "open")
    clock.now_ms = day0 + 2 * DAY_MS + 12 * HOUR

    days = svc.uptime(5)["market-btc-usdt"]
    assert [d.date for d in days] == [
        "2025-12-30",
        "2025-12-31",
        "2026-01-01",
        "2026-01-02",
        "2026-01-03",
    ]
    assert days[0].uptime is None and days[1].uptime is None  # before the component existed
    assert days[2].uptime == pytest.approx(100 * (1 - 6 / 24))
    assert days[2].worst == "major_outage"
    assert days[3].uptime == pytest.approx(100 * (1 - 0.3 * 4 / 24))
    assert days[3].worst == "partial_outage"
    assert days[4].uptime == pytest.approx(100 * (1 - 0.3 * 4 / 12))
    assert days[4].observed_ms == 12 * HOUR
    assert svc.uptime(90)["rest-api"][-1].uptime == 100.0
    assert len(svc.uptime(90)["rest-api"]) == 90


def test_real_engine_events_drive_status(tmp_path: Path, clock: ManualClock) -> None:
    from bastion.core import commands as C
    from bastion.core.engine import Engine

    svc = StatusService(tmp_path / "s.db", clock=clock)
    engine = Engine()
    cmds = [
        C.CreateAsset(seq=1, ts=1_000, asset="BTC", decimals=8),
        C.CreateAsset(seq=2, ts=1_000, asset="USDT", decimals=6),
        C.CreateMarket(
            seq=3,
            ts=1_000,
            market="BTC-USDT",
            base="BTC",
            quote="USDT",
            price_decimals=2,
            tick_size=100,
            lot_size=100,
            min_qty=100,
            max_qty=10**12,
        ),
        C.SetMarketMode(seq=4, ts=2_000, market="BTC-USDT", mode="halted", reason="operator drill"),
    ]
    for cmd in cmds:
        events = engine.apply(cmd)
        assert not any(type(e).__name__ == "Rejected" for e in events), events
        svc.tracker.observe_engine_events(events)
    assert svc.component("wallet-usdt").status == "operational"
    comp = svc.component("market-btc-usdt")
    assert comp.status == "major_outage" and "operator drill" in comp.derived_reason
    events = engine.apply(
        C.SetMarketMode(seq=5, ts=3_000, market="BTC-USDT", mode="open", reason="ok")
    )
    svc.tracker.observe_engine_events(events)
    assert svc.component("market-btc-usdt").status == "operational"


ACTIONS = st.lists(
    st.one_of(
        st.tuples(
            st.just("mode"),
            st.sampled_from(["BTC-USDT", "ETH-USDT"]),
            st.sampled_from(["open", "post_only", "cancel_only", "recovery", "halted", "closed"]),
        ),
        st.tuples(
            st.just("operator"),
            st.sampled_from(["market-btc-usdt", "market-eth-usdt", "rest-api"]),
            st.sampled_from(
                [
                    "operational",
                    "degraded_performance",
                    "partial_outage",
                    "major_outage",
                    "under_maintenance",
                ]
            ),
        ),
        st.tuples(st.just("maintenance"), st.sampled_from(["start", "complete"]), st.just("")),
        st.tuples(st.just("time"), st.integers(0, 10_000), st.just("")),
        st.tuples(st.just("resolve"), st.just(""), st.just("")),
    ),
    max_size=25,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(actions=ACTIONS)
def test_page_never_says_better_than_the_facts(
    tmp_path_factory: pytest.TempPathFactory, actions: list
) -> None:
    clock = ManualClock()
    svc = StatusService(tmp_path_factory.mktemp("h") / "s.db", clock=clock)
    modes = {"BTC-USDT": "open", "ETH-USDT": "open"}
    for m in modes:
        svc.tracker.register_market(m)
    m = svc.operator.schedule_maintenance("M", "b", ["market-btc-usdt"], clock() + HOUR, clock() + 2 * HOUR)
    for kind, a, b in actions:
        try:
            if kind == "mode":
                svc.tracker.observe_market_mode(a, b)
                modes[a] = b
            elif kind == "operator":
                svc.operator.set_component_status(a, b)
            elif kind == "resolve":
                for inc in [i for i in svc.view().incidents if i.open]:
                    try:
                        svc.operator.update_incident(inc.id, "resolved", "over?")
                    except StatusError as exc:
                        assert exc.code in ("market_halted", "still_unhealthy")
            elif kind == "maintenance":
                (svc.operator.start_maintenance if a == "start" else svc.operator.complete_maintenance)(m.id)
            else:
                clock.advance(a)
                svc.tracker.tick()
        except StatusError:
            pass
        view = svc.view()
        for market, mode in modes.items():
            comp = view.component(f"market-{market.lower()}")
            assert comp is not None
            if mode == "halted":
                assert comp.status == "major_outage"
            if mode != "open":
                assert comp.status != "operational"
            if comp.status in ("degraded_performance", "partial_outage", "major_outage"):
                maint = any(
                    x.status in ("in_progress", "verifying") and comp.id in x.component_ids
                    for x in view.maintenances
                )
                covered = any(comp.id in i.component_ids for i in view.incidents if i.open)
                assert covered or maint, (comp, view.incidents)
    svc.close()


def test_trouble_left_when_maintenance_ends_opens_an_incident(
    svc: StatusService, clock: ManualClock
) -> None:
    now = clock()
    m = svc.operator.schedule_maintenance("Upgrade", "b", ["market-btc-usdt"], now + MIN, now + HOUR)
    svc.operator.start_maintenance(m.id)
    svc.tracker.observe_market_mode("BTC-USDT", "halted", "upgrade failed")
    assert status_of(svc, "market-btc-usdt") == "major_outage"
    assert not open_incidents(svc)  # planned work, covered by the maintenance
    svc.operator.complete_maintenance(m.id, "Done (but the market is not).")
    (inc,) = open_incidents(svc)  # the status did not change, the explanation did
    assert inc.auto and inc.impact == "critical" and inc.component_ids == ["market-btc-usdt"]


def test_resolve_is_refused_while_the_facts_disagree(
    svc: StatusService, clock: ManualClock
) -> None:
    svc.tracker.observe_withdrawals("BTC", 20 * MIN)
    (inc,) = open_incidents(svc)
    with pytest.raises(StatusError) as exc:
        svc.operator.update_incident(inc.id, "resolved", "Withdrawals are fine.")
    assert exc.value.code == "still_unhealthy" and "20 min" in exc.value.message
    svc.tracker.observe_withdrawals("BTC", None)
    assert svc.operator.update_incident(inc.id, "resolved", "Queue drained.").status == "resolved"
    assert (
        svc.operator.update_incident(inc.id, "postmortem", "Custody API timed out.").status == "postmortem"
    )
