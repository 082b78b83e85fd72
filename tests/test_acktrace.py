"""The ack stage trace (``BASTION_ACK_TRACE``): off unless asked; when on, every order's stages
join up by seq and come in order, on a real node (journal on disk, O_DSYNC) behind the
gateway, as the server runs them."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from bisect import bisect_right
from pathlib import Path

import pytest

from bastion import acktrace
from bastion.api.service.gateway import Gateway
from bastion.core import commands as C
from bastion.demo import BTC_USDT, demo_setup
from bastion.node import Node, NodeConfig


def test_off_unless_the_variable_names_a_file(tmp_path: Path) -> None:
    assert acktrace.from_env({}) is None
    assert acktrace.from_env({acktrace.ENV: ""}) is None
    on = acktrace.from_env({acktrace.ENV: str(tmp_path / "x.json")})
    assert on is not None and on.path == tmp_path / "x.json"
    assert list(tmp_path.iterdir()) == []  # the check leaves nothing behind


def test_a_trace_path_that_cannot_be_written_is_refused_at_start(tmp_path: Path) -> None:
    """Said at once, without a traceback, before the server starts (it used to print a
    traceback at shutdown, having traced for nothing)."""
    (tmp_path / "file").write_text("")
    for bad, why in ((tmp_path / "missing" / "t.json", "No such file or directory"),
                     (tmp_path / "file" / "t.json", "Not a directory"),
                     (tmp_path, "is a directory")):
        data = tmp_path / "data"
        env = {**os.environ, acktrace.ENV: str(bad), "BASTION_DATA": str(data),
               "BASTION_HTTP_PORT": "1", "BASTION_DEMO_TRAFFIC": "0"}
        r = subprocess.run([sys.executable, "-c", "from bastion.cli.main import app; app()",
                            "run"], env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode != 0, r.stderr
        assert f"error: ACK_TRACE_UNWRITABLE: {acktrace.ENV}={bad}" in r.stderr, r.stderr
        assert why in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert not data.exists(), "the server started"


def test_a_trace_that_cannot_be_written_at_shutdown_logs_one_error(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    where = tmp_path / "gone"
    where.mkdir()
    trace = acktrace.AckTrace(where / "t.json")
    trace.check()
    where.rmdir()
    with caplog.at_level(logging.ERROR, "bastion.acktrace"):
        trace.close()
    assert [r.getMessage() for r in caplog.records] == [
        f"ack trace not written to {where / 't.json'}: [Errno 2] No such file or directory: "
        f"'{where / 't.json.tmp'}'"]


async def _traffic(directory: Path, n: int) -> None:
    node = Node(directory, config=NodeConfig(snapshot_every_commands=0, snapshot_every_seconds=0,
                                             progress=False, segment_bytes=4096))
    await node.start()
    gw = Gateway(node)
    gw.attach()
    trace = acktrace.TRACE
    assert trace is not None and gw.trace is trace
    try:
        await node.submit_many(demo_setup([1, 2]))

        async def one(i: int) -> None:
            trace.received = acktrace.now()  # what a transport does on receipt
            await gw.place(C.PlaceOrder(account=1 + i % 2, market=BTC_USDT,
                                        side="buy" if i % 2 else "sell",
                                        price=4_900_000 - i if i % 2 else 5_100_000 + i,
                                        qty=1_000, client_id=f"c-{i}"))

        for start in range(0, n, 25):  # a few journal batches of 25
            await asyncio.gather(*(one(i) for i in range(start, start + 25)))
    finally:
        await node.close()


def test_every_order_is_traced_through_each_stage_in_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "trace.json"
    monkeypatch.setattr(acktrace, "TRACE", acktrace.AckTrace(out))
    asyncio.run(_traffic(tmp_path / "node", 100))
    doc = json.loads(out.read_text())
    orders = {o[0]: o for o in doc["orders"]}
    assert sorted(orders) == sorted(f"c-{i}" for i in range(100))
    queued = sorted(doc["queued"])
    writes = sorted(doc["writes"])
    drained = dict(doc["drained"])
    seqs = set()
    for _, seq, received, submitted, resumed in orders.values():
        q = queued[bisect_right([x[0] for x in queued], seq) - 1]
        w = writes[bisect_right([x[0] for x in writes], seq) - 1]
        assert q[0] <= seq < q[0] + q[1] and w[0] <= seq < w[0] + w[1]
        marks = [received, submitted, q[2], w[2], w[3], drained[q[0]], resumed]
        assert marks == sorted(marks) and marks[0] > 0
        seqs.add(seq)
    assert len(seqs) == 100
    # a 4 KiB segment rolls every few batches: each roll is an event with its first seq
    rolls = [e for e in doc["events"] if e[0] == "segment_roll"]
    assert rolls and all(e[1] <= e[2] for e in rolls)
    assert {e[3] for e in rolls} <= {q[0] for q in queued} | {1}
