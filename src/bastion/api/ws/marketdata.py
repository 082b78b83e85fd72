"""L2 book mirrors that turn engine changes into sequenced snapshot + delta messages.

After each applied batch the read model names the price levels events may have touched; the
mirror re-reads exactly those levels from the engine and publishes the ones whose quantity
changed. Each delta carries ``seq`` (engine sequence after the batch) and ``prev_seq`` (the
previous delta of that market), so a client holding a snapshot applies deltas whose
``prev_seq`` equals its last ``seq`` and knows it missed one otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable

from bastion.core.engine import Engine

Levels = dict[int, int]


class BookMirror:
    __slots__ = ("asks", "bids", "market", "seq", "version")

    def __init__(self, market: str) -> None:
        self.market = market
        self.bids: Levels = {}
        self.asks: Levels = {}
        self.seq = 0
        #: bumped on every change (a reload too: after a rollback the same ``seq`` can hold
        #: other levels), so a snapshot rendered at one version is valid until it moves
        self.version = 0

    def load(self, engine: Engine) -> None:
        book = engine.books.get(self.market)
        self.bids = {}
        self.asks = {}
        if book is not None:
            self.bids = {p: lv.qty for p, lv in book.bids.levels.items()}
            self.asks = {p: lv.qty for p, lv in book.asks.levels.items()}
        self.seq = engine.seq
        self.version += 1

    def snapshot(self, depth: int | None = None) -> tuple[list[tuple[int, int]],
                                                          list[tuple[int, int]]]:
        bids = sorted(self.bids.items(), reverse=True)
        asks = sorted(self.asks.items())
        if depth is not None:
            bids, asks = bids[:depth], asks[:depth]
        return bids, asks


class BookFeed:
    """All markets' mirrors; ``update`` returns ``(market, prev_seq, seq, bids, asks)`` deltas
    where a quantity of 0 removes the level."""

    def __init__(self) -> None:
        self.mirrors: dict[str, BookMirror] = {}

    def load(self, engine: Engine) -> None:
        for name in engine.books:
            m = self.mirrors.get(name) or BookMirror(name)
            m.load(engine)
            self.mirrors[name] = m

    def mirror(self, market: str) -> BookMirror | None:
        return self.mirrors.get(market)

    def update(self, engine: Engine, touched: Iterable[tuple[str, bool, int]]
               ) -> list[tuple[str, int, int, list[tuple[int, int]], list[tuple[int, int]]]]:
        changed: dict[str, tuple[list[tuple[int, int]], list[tuple[int, int]]]] = {}
        books = engine.books
        for market, is_bid, price in touched:
            mirror = self.mirrors.get(market)
            book = books.get(market)
            if book is None:
                continue
            if mirror is None:
                mirror = self.mirrors[market] = BookMirror(market)
            side = book.bids if is_bid else book.asks
            level = side.levels.get(price)
            qty = level.qty if level is not None else 0
            levels = mirror.bids if is_bid else mirror.asks
            if levels.get(price, 0) == qty:
                continue
            if qty:
                levels[price] = qty
            else:
                del levels[price]
            entry = changed.get(market)
            if entry is None:
                entry = changed[market] = ([], [])
            entry[0 if is_bid else 1].append((price, qty))
        out = []
        seq = engine.seq
        for market, (bids, asks) in changed.items():
            mirror = self.mirrors[market]
            out.append((market, mirror.seq, seq, bids, asks))
            mirror.seq = seq
            mirror.version += 1
        return out
