"""The status records gateways share (`bastion.status.shared`), between two status services in
one process: the writer stands in for the cluster's bucket (the real one is tested on a real
cluster in `tests/cluster/test_cluster_status.py`). A verb changes nothing until the writer
took its records; what one service wrote is applied on the other with the same changes; a
record already held is not applied twice; auto incidents get the same id on both."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.status import StatusError, StatusService
from bastion.status.errors import unavailable
from bastion.status.model import Change
from bastion.status.shared import apply_history, apply_record, history_key
from status_support import ManualClock


def _pair(tmp_path: Path) -> tuple[StatusService, StatusService, list[tuple[str, bytes | None]]]:
    clock = ManualClock()
    a = StatusService(tmp_path / "a.db", clock=clock)
    b = StatusService(tmp_path / "b.db", clock=clock)
    bucket: list[tuple[str, bytes | None]] = []
    for svc in (a, b):
        svc.tracker.register_market("BTC-USDT")
    for me, other in ((a, b), (b, a)):
        def writer(records: list[tuple[str, bytes | None]], me: StatusService = me,
                   other: StatusService = other) -> None:
            bucket.extend(records)
            for key, value in records:  # here, then the other gateway's watch
                apply_record(me, key, value)
                apply_record(other, key, value)

        me.board.writer = writer
    return a, b, bucket


def _changes(svc: StatusService) -> list[Change]:
    got: list[Change] = []
    svc.board.subscribe(got.append)
    return got


def test_records_written_on_one_service_apply_on_the_other(tmp_path: Path) -> None:
    a, b, bucket = _pair(tmp_path)
    on_a, on_b = _changes(a), _changes(b)
    sub = a.write(a.subscribers.add, "https://hooks.example/x")
    assert [s.id for s in b.subscribers.list()] == [sub.id]
    inc = a.write(a.operator.open_incident, "Slow", "Looking.", ["rest-api"],
                  component_status="degraded_performance")
    assert b.incident(inc.id).name == "Slow"
    assert b.component("rest-api").status == "degraded_performance"
    assert [k for k, _ in bucket] == [f"subscriber.{sub.id}", f"incident.{inc.id}",
                                      "override.rest-api"]
    kinds = [c.kind for c in on_b if c.incident is not None]
    assert kinds == [c.kind for c in on_a if c.incident is not None] == ["incident.created"]
    # the same record again (a re-read of the bucket) changes nothing and emits nothing
    before = len(on_b)
    for key, value in bucket:
        assert apply_record(b, key, value) is False
    assert len(on_b) == before
    # an update and the resolve on b reach a; the override is cleared on both
    b.write(b.operator.update_incident, inc.id, "resolved", "Fixed.")
    assert a.incident(inc.id).status == "resolved"
    assert a.component("rest-api").status == b.component("rest-api").status == "operational"
    assert any(c.kind == "incident.resolved" for c in on_a)
    # the history of both holds the same transitions at the same times
    assert a.board.store.history_since(0)[-2:] == b.board.store.history_since(0)[-2:]


def test_a_change_the_bucket_refuses_leaves_nothing(tmp_path: Path) -> None:
    a, b, bucket = _pair(tmp_path)
    on_a = _changes(a)

    def refuse(records: list[tuple[str, bytes | None]]) -> None:
        raise unavailable("no quorum")

    a.board.writer = refuse
    with pytest.raises(StatusError) as err:
        a.write(a.operator.open_incident, "Never", "Lost.", ["rest-api"],
                component_status="major_outage")
    assert err.value.code == "status_unavailable" and err.value.http_status == 503
    assert a.view().incidents == [] and on_a == []
    assert a.component("rest-api").operator_status == "operational"
    reopened = StatusService(tmp_path / "a.db")  # nor in the store
    assert reopened.view().incidents == []
    assert bucket == []


def test_auto_incidents_get_the_same_id_on_every_service(tmp_path: Path) -> None:
    a, b, _ = _pair(tmp_path)
    for svc in (a, b):
        svc.tracker.observe_market_mode("BTC-USDT", "halted", "circuit breaker", ts_ms=1234)
    (auto_a,), (auto_b,) = a.view().incidents, b.view().incidents
    assert auto_a.auto and auto_a.id == auto_b.id
    # so an operator's update to it is shared like any incident's
    a.write(a.operator.update_incident, auto_a.id, "identified", "Price feed fault.")
    assert b.incident(auto_a.id).updates[-1].body == "Price feed fault."


def test_shared_history_rows_are_stored_once(tmp_path: Path) -> None:
    a, b, _ = _pair(tmp_path)
    rows: list[tuple[str, int, str, str]] = []
    a.board.history_sink = lambda *row: rows.append(row)
    a.tracker.observe_market_mode("BTC-USDT", "halted", "breaker", ts_ms=5000)
    b.tracker.observe_market_mode("BTC-USDT", "halted", "breaker", ts_ms=5000)
    (cid, ts, status, reason), = rows
    assert (ts, status) == (5000, "major_outage")
    before = b.board.store.history_since(0)
    apply_history(b, history_key(cid, ts, status), reason.encode())  # b derived it too
    assert b.board.store.history_since(0) == before
    fresh = StatusService(tmp_path / "c.db")
    apply_history(fresh, history_key(cid, ts, status), reason.encode())
    assert (cid, ts, status, reason) in fresh.board.store.history_since(0)
