"""The read model's own checkpoints, so a restart costs the node's recovery and not a replay of
the whole history.

A checkpoint is written by the node's snapshot child (``Node.snapshot_hooks``), from the same
forked memory as the engine snapshot, so both are at exactly the same seq. On start the node
loads its newest valid snapshot and replays the journal after it; ``Restorer.sink`` hands the
read model restored from the checkpoint at that seq to the node's replay, which feeds it the
tail's events as it applies them. No second engine, no second pass over the journal.
"""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from pathlib import Path

import msgspec

from bastion.api.readmodel import (
    FILLS_PER_ACCOUNT,
    Candle,
    Fill,
    OrderRecord,
    ReadModel,
)
from bastion.core import events as E
from bastion.core.engine import Engine
from bastion.core.perp.state import Position
from bastion.journal.fsutil import ensure_dir, fsync_dir

log = logging.getLogger("bastion.api")

FORMAT = 1
KEEP = 3
SUFFIX = ".rmck"


class _Account(msgspec.Struct, array_like=True):
    account: int
    open: list[OrderRecord]
    closed: list[OrderRecord]
    fills: list[Fill]


class _State(msgspec.Struct):
    format: int
    seq: int
    accounts: list[_Account]
    trades: dict[str, list[E.Trade]]
    candles: dict[str, list[Candle]]
    funding: dict[str, list[E.FundingSettled]]
    positions: list[Position]


def _export(rm: ReadModel, seq: int) -> _State:
    return _State(
        format=FORMAT, seq=seq,
        accounts=[_Account(a, list(v.open.values()), list(v.closed), list(v.fills))
                  for a, v in rm.accounts.items()],
        trades={m: list(t) for m, t in rm.trades.items()},
        candles={m: list(c.values()) for m, c in rm.candles.items()},
        funding={m: list(f) for m, f in rm.funding.items()},
        positions=list(rm.positions.values()))


def _restore(state: _State, engine: Callable[[], Engine]) -> ReadModel:
    rm = ReadModel(engine)
    for acct in state.accounts:
        view = rm._view(acct.account)
        for rec in acct.closed:
            view.closed.append(rec)
            rm.orders[rec.order_id] = rec
        for rec in acct.open:
            view.open[rec.order_id] = rec
            rm.orders[rec.order_id] = rec
        view.fills = deque(acct.fills, maxlen=FILLS_PER_ACCOUNT)
    for rec in sorted(rm.orders.values(), key=lambda r: r.order_id):
        if rec.client_id:
            rm.by_client[(rec.account, rec.client_id)] = rec
    for market, trades in state.trades.items():
        rm.trades[market] = deque(trades, maxlen=1_000)
    for market, candles in state.candles.items():
        rm.candles[market] = OrderedDict((c.start, c) for c in candles)
    for market, funding in state.funding.items():
        rm.funding[market] = deque(funding, maxlen=1_000)
    rm.positions = {(p.account, p.market): p for p in state.positions}
    rm.seq = state.seq
    return rm


class Checkpoints:
    """``<dir>/<seq>.rmck`` files (0600 in a 0700 directory), newest ``KEEP`` kept."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, seq: int) -> Path:
        return self.directory / f"{seq:020d}{SUFFIX}"

    def write(self, rm: ReadModel, seq: int) -> Path:
        """Durably write ``rm`` as the read model at ``seq`` (runs in the snapshot child)."""
        ensure_dir(self.directory)
        os.chmod(self.directory, 0o700)
        data = msgspec.msgpack.encode(_export(rm, seq))
        final = self.path(seq)
        tmp = final.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        fsync_dir(self.directory)
        for old in sorted(self.directory.glob(f"*{SUFFIX}"))[:-KEEP]:
            old.unlink(missing_ok=True)
        return final

    def load(self, seq: int, engine: Callable[[], Engine]) -> ReadModel | None:
        """The read model at exactly ``seq``, or None if there is no usable checkpoint."""
        path = self.path(seq)
        if not path.exists():
            return None
        try:
            state = msgspec.msgpack.decode(path.read_bytes(), type=_State)
        except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.warning("read-model checkpoint %s unusable (%s); rebuilding from the journal",
                        path.name, exc)
            return None
        if state.format != FORMAT or state.seq != seq:
            return None
        return _restore(state, engine)


class Restorer:
    """Given to the node as its ``recovery_sink``: picks up the checkpoint at the node's
    snapshot and follows the replayed tail; ``restored`` is None when there was none to use."""

    def __init__(self, checkpoints: Checkpoints) -> None:
        self.checkpoints = checkpoints
        self.restored: ReadModel | None = None
        self.base_seq = 0
        self.tail = 0
        self.seconds = 0.0
        self._engine: Engine | None = None

    def sink(self, engine: Engine) -> Callable[[list[E.Event]], None] | None:
        t0 = time.perf_counter()
        self._engine = engine
        self.base_seq = engine.seq
        if engine.seq == 0:
            rm: ReadModel | None = ReadModel(self._current)
        else:
            rm = self.checkpoints.load(engine.seq, self._current)
        self.seconds = time.perf_counter() - t0
        if rm is None:
            return None
        self.restored = rm
        apply = rm.apply

        def follow(events: list[E.Event]) -> None:
            apply(events)
            self.tail += 1

        return follow

    def _current(self) -> Engine:
        assert self._engine is not None
        return self._engine
