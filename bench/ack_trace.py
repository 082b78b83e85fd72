"""Where a slow acknowledgement's time went: joins the load generator's own record of each
order (scheduled, sent, answer read) with the server's stage trace (``bastion.acktrace``,
``BASTION_ACK_TRACE``) by client order id, and splits each order's latency into stages:

    gen         due -> sent: the generator late, or (REST) waiting for a free connection
    to_server   sent -> the server's transport had the whole order (network, loop not reading)
    parse       -> the gateway called the node (auth, decode, checks)
    to_journal  -> handed to the journal's group committer (the loop turn's batch)
    writer_wait -> the writer thread took it (a previous write running, thread wake-up)
    write_sync  -> its write + sync returned (O_DSYNC)
    wake_loop   -> the loop began applying it (cross-thread wake-up, loop busy)
    apply       -> the order's coroutine resumed (apply + publish of that drain)
    reply       -> the generator read the answer (render, write, network, generator)

Used by ``bench/gateway.py --trace``; also runnable on saved files:
``python bench/ack_trace.py trace.json timeline.json``.
"""

from __future__ import annotations

import json
import sys
import time
from bisect import bisect_right
from collections import Counter
from typing import Any

STAGES = ("gen", "to_server", "parse", "to_journal", "writer_wait", "write_sync", "wake_loop",
          "apply", "reply")

#: perf_counter seconds -> monotonic ns (the same clock on Linux; measured, not assumed)
_OFFSET = time.monotonic_ns() - int(time.perf_counter() * 1e9)


def client_id(body: bytes) -> str:
    """The client order id of an ``OrderGen`` body (its 20th quoted field)."""
    return body.split(b'"', 20)[19].decode()


class Trace:
    def __init__(self, doc: dict[str, Any]) -> None:
        self.orders = {o[0]: o for o in doc["orders"] if o[0]}
        queued = sorted(doc["queued"])
        self.q_first = [q[0] for q in queued]
        self.queued = queued
        writes = sorted(doc["writes"])
        self.w_first = [w[0] for w in writes]
        self.writes = writes
        self.drained = {d[0]: d[1] for d in doc["drained"]}
        self.events = sorted((tuple(e) for e in doc["events"]), key=lambda e: e[1])

    def _containing(self, firsts: list[int], rows: list[Any], seq: int) -> Any:
        i = bisect_right(firsts, seq) - 1
        if i >= 0 and rows[i][0] <= seq < rows[i][0] + rows[i][1]:
            return rows[i]
        return None

    def stages(self, body: bytes, due: float, sent: float, done: float
               ) -> tuple[dict[str, float], int] | None:
        """Milliseconds per stage and the journal write's record count, or ``None`` if the
        server did not trace this order."""
        o = self.orders.get(client_id(body))
        if o is None:
            return None
        _, seq, recv, submitted, resumed = o
        q = self._containing(self.q_first, self.queued, seq)
        w = self._containing(self.w_first, self.writes, seq)
        if q is None or w is None or q[0] not in self.drained:
            return None
        drain = self.drained[q[0]]
        due_ns, sent_ns, done_ns = (int(t * 1e9) + _OFFSET for t in (due, sent, done))
        marks = (due_ns, sent_ns, recv, submitted, q[2], w[2], w[3], drain, resumed, done_ns)
        return ({name: (marks[i + 1] - marks[i]) / 1e6 for i, name in enumerate(STAGES)},
                w[1])

    def overlapping(self, start: int, end: int) -> list[tuple[str, int, int, int]]:
        return [e for e in self.events if e[1] <= end and e[2] >= start]


def report(trace: Trace, part: list[tuple[bytes, float, float, float]], worst: float = 0.01
           ) -> dict[str, Any]:
    """The slowest ``worst`` share of one fixed-rate phase against its median order: mean ms
    per stage, the journal batch sizes, and the events that overlapped the slow ones."""
    rows = []
    for body, due, sent, done in part:
        got = trace.stages(body, due, sent, done)
        if got is not None:
            rows.append((done - due, due, done, got[0], got[1]))
    if not rows:
        return {"traced": 0}
    rows.sort(key=lambda r: r[0])
    k = max(1, int(len(rows) * worst))
    slow = rows[-k:]
    mid = rows[len(rows) // 4: 3 * len(rows) // 4]

    def mean(sel: list[Any]) -> dict[str, float]:
        return {s: round(sum(r[3][s] for r in sel) / len(sel), 3) for s in STAGES}

    kinds: Counter[str] = Counter()
    longest: dict[str, float] = {}
    seen: set[tuple[str, int, int, int]] = set()
    for _, due, done, _, _ in slow:
        for e in trace.overlapping(int(due * 1e9) + _OFFSET, int(done * 1e9) + _OFFSET):
            if e not in seen:
                seen.add(e)
                kinds[e[0]] += 1
                longest[e[0]] = max(longest.get(e[0], 0.0), (e[2] - e[1]) / 1e6)
    t0 = int(rows[0][1] * 1e9) + _OFFSET
    t1 = int(max(r[2] for r in rows) * 1e9) + _OFFSET
    phase_events = Counter(e[0] for e in trace.overlapping(t0, t1))
    return {"traced": len(rows), "slowest": k, "slowest_from_ms": round(slow[0][0] * 1e3, 2),
            "slow_mean_ms": mean(slow), "middle_half_mean_ms": mean(mid),
            "slow_batch_records": round(sum(r[4] for r in slow) / k, 1),
            "middle_batch_records": round(sum(r[4] for r in mid) / len(mid), 1),
            "events_over_slow": {n: {"count": c, "longest_ms": round(longest[n], 2)}
                                 for n, c in kinds.most_common()},
            "events_in_phase": dict(phase_events.most_common())}


def show(name: str, i: int, n: int, rep: dict[str, Any]) -> None:
    if not rep.get("traced"):
        print(f"{'':>18}trace {name} phase {i}/{n}: no traced orders", flush=True)
        return

    def line(d: dict[str, float]) -> str:
        return " ".join(f"{s} {d[s]:.2f}" for s in STAGES)

    print(f"{'':>18}trace {name} phase {i}/{n}: slowest {rep['slowest']} of {rep['traced']} "
          f"(>= {rep['slowest_from_ms']} ms), mean ms: {line(rep['slow_mean_ms'])}; "
          f"batch {rep['slow_batch_records']} records", flush=True)
    print(f"{'':>18}{'':>{len(name) + 15}}middle half, mean ms: "
          f"{line(rep['middle_half_mean_ms'])}; batch {rep['middle_batch_records']} records",
          flush=True)
    ev = ", ".join(f"{k} {v['count']}x (longest {v['longest_ms']} ms)"
                   for k, v in rep["events_over_slow"].items()) or "none"
    allev = ", ".join(f"{k} {v}x" for k, v in rep["events_in_phase"].items()) or "none"
    print(f"{'':>18}{'':>{len(name) + 15}}events over the slowest: {ev}; in the whole phase: "
          f"{allev}", flush=True)


if __name__ == "__main__":
    from pathlib import Path

    doc = json.loads(Path(sys.argv[1]).read_text())
    parts = json.loads(Path(sys.argv[2]).read_text())
    tr = Trace(doc)
    for j, p in enumerate(parts, 1):
        show("saved", j, len(parts), report(tr, [(b.encode(), *t) for b, *t in p]))
