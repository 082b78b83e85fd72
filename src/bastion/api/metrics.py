"""``/metrics`` in the Prometheus text format, from the gateway's live state.

Two kinds of series: events counted where they happen (commands by type and outcome, ack
latency, journal batches, event-loop lag, GC pauses, guard trips) and state read at scrape
time (sequence, open orders and mode per market, WebSocket sockets, rate-limit refusals), so a
scrape never shows a value that is not in the process. One registry per app: two gateways in
one process (tests) never mix their series.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bastion.api.nodelike import Committing
from bastion.core import events as E
from bastion.core.commands import MarketMode
from bastion.journal.group import GroupCommitter
from bastion.node.node import Node

if TYPE_CHECKING:
    from bastion.api.security.ratelimit import Limiter
    from bastion.api.service.gateway import Gateway
    from bastion.core.engine import Engine

#: every mode a market can be in (``bastion_market_mode`` is a state set over these)
MODES: tuple[MarketMode, ...] = ("open", "post_only", "cancel_only", "recovery", "halted",
                                 "closed")

_LATENCY = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0,
            2.5)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)


class Metrics:
    """The process's meters. The gateway, the journal's committer, the GC watcher and the
    loop-lag ticker feed it; ``bind`` names the state that scrapes read."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.rejections = Counter("bastion_rejections", "Commands the core refused, by reject "
                                  "code", ["code"], registry=r)
        #: counted in plain ints (the per-order path; prometheus-client's locked children cost
        #: ~7 us a command here, this ~1 us) and exposed by ``_StateCollector``
        self.ack = FastHistogram(_LATENCY)
        self.counts: dict[tuple[str, str], int] = {}
        #: fed by the journal's writer thread, the only writer of each (plain ints as for
        #: ``ack``: prometheus-client's locked children cost that thread two Python-level
        #: locks per batch, each a GIL round trip while the event loop runs)
        self.fsync = FastHistogram(_LATENCY)
        self.batch = FastHistogram(_BATCH)
        self.loop_lag = Histogram("bastion_event_loop_lag_seconds", "How late a 5 ms ticker "
                                  "on the event loop ran (a stall delays every ack by this)",
                                  buckets=_LATENCY, registry=r)
        self.gc_pause = Histogram("bastion_gc_pause_seconds", "Garbage-collector pauses, by "
                                  "generation", ["generation"], buckets=_LATENCY, registry=r)
        self.guard_trips = Counter("bastion_guard_trips", "Invariant guards that halted a "
                                   "market, by market and guard", ["market", "guard"],
                                   registry=r)
        #: WebSocket sockets open now, per surface (each surface registers its own count)
        self.ws_sources: dict[str, Callable[[], int]] = {}
        #: the node's role (the cluster replaces it: leader, standby, gateway)
        self.role: Callable[[], str] = lambda: "embedded"
        #: commands the replica is behind its leader; ``None`` where there is no replica
        self.replica_lag: Callable[[], int | None] = lambda: None
        self._gateway: Gateway | None = None
        self._limiters: list[Limiter] = []
        r.register(_StateCollector(self))

    def bind(self, gateway: Gateway, limiters: list[Limiter]) -> None:
        """The state scrapes read, and the event stream guard trips are counted from."""
        self._gateway = gateway
        self._limiters = limiters
        gateway.meter = self
        gateway.add_listener(self._on_events)
        node = gateway.node
        committer = node.committer if isinstance(node, Committing) else None
        if isinstance(committer, GroupCommitter):  # the local journal's (not JetStream's)
            committer.on_batch = self._on_batch

    # ------------------------------------------------------------ fed by the hot path

    def command(self, cmd_type: type, outcome: str, seconds: float) -> None:
        """One submitted command (runs per order, on the event loop only)."""
        key = (cmd_type.__name__, outcome)
        counts = self.counts
        counts[key] = counts.get(key, 0) + 1
        if outcome != "unavailable":
            self.ack.observe(seconds)

    def _on_batch(self, records: int, seconds: float) -> None:
        self.fsync.observe(seconds)
        self.batch.observe(records)

    def _on_events(self, events: list[E.Event], _deltas: list[Any]) -> None:
        for ev in events:
            if type(ev) is E.GuardTripped:
                self.guard_trips.labels(ev.market, ev.guard).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def gc_observer(self) -> Callable[[int, float], None]:
        """``observe(generation, seconds)`` for the GC watcher (``server.GcWatch``)."""
        children = [self.gc_pause.labels(str(g)) for g in range(3)]

        def observe(generation: int, seconds: float) -> None:
            children[min(max(generation, 0), 2)].observe(seconds)

        return observe


class FastHistogram:
    """A histogram for one writer thread: a bisect and two additions per observation."""

    __slots__ = ("bounds", "buckets", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.buckets = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.buckets[bisect_left(self.bounds, value)] += 1
        self.total += value

    def family(self, name: str, doc: str) -> HistogramMetricFamily:
        cumulative, running = [], 0
        for bound, n in zip((*map(str, self.bounds), "+Inf"), self.buckets, strict=True):
            running += n
            cumulative.append((bound, running))
        return HistogramMetricFamily(name, doc, buckets=cumulative, sum_value=self.total)


class _StateCollector(Collector):
    """Series read from state at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.m
        gw = m._gateway
        if gw is None:
            return
        engine = gw.engine
        node = gw.node
        commands = CounterMetricFamily("bastion_commands", "Commands submitted to the node, by "
                                       "command type and outcome (accepted, rejected, "
                                       "unavailable)", labels=["type", "outcome"])
        for (kind, outcome), n in sorted(m.counts.items()):
            commands.add_metric([kind, outcome], n)
        yield commands
        yield m.ack.family("bastion_ack_seconds", "Submit to acknowledgement (journaled durably "
                           "and applied), per command")
        yield m.fsync.family("bastion_journal_fsync_seconds", "One group-commit append: write "
                             "+ fdatasync")
        yield m.batch.family("bastion_journal_batch_records", "Records per group-commit append")
        role = GaugeMetricFamily("bastion_node_role", "The node's role (1 for the current one)",
                                 labels=["role"])
        role.add_metric([m.role()], 1)
        yield role
        yield GaugeMetricFamily("bastion_node_seq", "Last applied (hence durable) sequence",
                                value=engine.seq)
        yield GaugeMetricFamily("bastion_node_up", "1 while the node accepts commands, 0 after "
                                "a journal failure stopped it", value=int(node.failure is None))
        yield GaugeMetricFamily("bastion_journal_pending_seconds", "Age of the oldest batch "
                                "waiting for the journal", value=node.pending_age())
        forks = CounterMetricFamily("bastion_forks", "Forks of the serving process for a "
                                    "snapshot (node) or a read-model checkpoint (readmodel)",
                                    labels=["kind"])
        last = GaugeMetricFamily("bastion_fork_pause_last_seconds", "How long the latest "
                                 "such fork stopped the event loop", labels=["kind"])
        for kind, pauses in _fork_pauses(gw):
            forks.add_metric([kind], len(pauses))
            last.add_metric([kind], pauses[-1] if pauses else 0.0)
        yield forks
        yield last
        lag = m.replica_lag()
        if lag is not None:
            yield GaugeMetricFamily("bastion_replica_lag_commands", "Commands this replica is "
                                    "behind its leader", value=lag)
        per_market = resting_orders(engine)
        orders = GaugeMetricFamily("bastion_open_orders", "Resting orders per market",
                                   labels=["market"])
        modes = GaugeMetricFamily("bastion_market_mode", "The market's mode (1 for the "
                                  "current one)", labels=["market", "mode"])
        for name, mkt in sorted(engine.markets.items()):
            orders.add_metric([name], per_market.get(name, 0))
            for mode in MODES:
                modes.add_metric([name, mode], int(mkt.mode == mode))
        yield orders
        yield modes
        sockets = GaugeMetricFamily("bastion_websocket_connections", "Open WebSocket "
                                    "connections, per surface", labels=["surface"])
        for surface, count in sorted(m.ws_sources.items()):
            sockets.add_metric([surface], count())
        yield sockets
        refused = CounterMetricFamily("bastion_rate_limit_refusals", "Requests refused with "
                                      "429 by a rate limit", labels=["limit"])
        for limiter in m._limiters:
            refused.add_metric([limiter.kind], limiter.refused)
        yield refused


def resting_orders(engine: Engine) -> dict[str, int]:
    """Resting orders per market from the books' level counts: a tally over
    ``engine.orders`` held the loop ~80 ms per scrape at 400k orders (a scrape every 15 s:
    0.5% of the orders queued behind it); a book has a few hundred levels."""
    return {name: sum(level.count for side in (book.bids, book.asks)
                      for level in side.levels.values())
            for name, book in engine.books.items()}


def _fork_pauses(gw: Gateway) -> list[tuple[str, Sequence[float]]]:
    """Each fork's pause of the loop, by kind: a fork inside a fixed-rate phase is a stall of
    several ms that every order in flight waits out (``bench/gateway.py`` shows them)."""
    node = gw.node
    out: list[tuple[str, Sequence[float]]] = [
        ("snapshot", node.snapshot_pauses if isinstance(node, Node) else [])]
    checkpointer = gw.checkpointer
    out.append(("readmodel", checkpointer.pauses if checkpointer is not None else []))
    return out


def route(metrics: Metrics) -> Route:
    """``GET /metrics`` (public, like a typical exporter: bind it to an internal interface
    or filter it at the proxy if the figures are sensitive)."""

    async def handler(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return Route("/metrics", handler, methods=["GET"])
