"""Price-time priority order book: O(1) cancel, O(log n) best price, FIFO levels.

Levels are FIFO lists with lazy deletion (a cancelled order is flagged dead and skipped when it
reaches the front), so cancel never searches a level. Best prices come from a heap of level
prices with lazy removal of emptied levels.
"""

from heapq import heappop, heappush
from typing import Any, final

from mypy_extensions import mypyc_attr

from bastion.core.records import Order


@final
@mypyc_attr(acyclic=True)
class Level:
    """One price level. Acyclic (orders never point back at it): the collector never tracks
    it, and levels come and go with every touch of an empty price.

    ``orders`` is a list read from ``head``: everything before ``head`` is dead. A list, not a
    deque: compiled code appends to and indexes a list natively, a deque only through Python
    method calls. ``pop_front`` trims the dead prefix once it is half the list."""

    __slots__ = ("count", "head", "orders", "price", "qty")

    def __init__(self, price: int) -> None:
        self.price = price
        self.orders: list[Order] = []
        self.head = 0
        self.qty = 0
        self.count = 0

    def front(self) -> Order:
        return self.orders[self.head]

    def pop_front(self) -> None:
        head = self.head + 1
        if head >= 32 and head * 2 >= len(self.orders):
            del self.orders[:head]
            head = 0
        self.head = head

    def live_orders(self) -> list[Order]:
        return [o for o in self.orders if o.live]


@final
class BookSide:
    """One side; the heap holds prices (negated for bids) so heap[0] is always the best.

    ``top`` caches the best price (0: not known; prices are positive). Order entry asks for
    the best price of the opposite side on every order: the cache answers without a dict
    lookup. Levels appear only in ``add`` and go only through ``remove`` and ``drop``, which
    keep it right."""

    __slots__ = ("heap", "in_heap", "is_bid", "levels", "top")

    def __init__(self, is_bid: bool) -> None:
        self.is_bid = is_bid
        self.levels: dict[int, Level] = {}
        self.heap: list[int] = []
        self.in_heap: set[int] = set()
        self.top = 0

    def best(self) -> int | None:
        top = self.top
        if top:
            return top
        heap = self.heap
        levels = self.levels
        while heap:
            key = heap[0]
            price = -key if self.is_bid else key
            if price in levels:
                self.top = price
                return price
            heappop(heap)
            self.in_heap.discard(price)
        return None

    def add(self, order: Order) -> None:
        price = order.price
        key: Any = price  # boxed once (compiled): a new level's map, set and heap share it
        level = self.levels.get(key)
        if level is None:
            level = self.levels[key] = Level(price)
            if key not in self.in_heap:
                self.in_heap.add(key)
                heappush(self.heap, -price if self.is_bid else key)
        level.orders.append(order)
        level.qty += order.remaining
        level.count += 1
        top = self.top
        if top and (price > top if self.is_bid else price < top):
            self.top = price

    def remove(self, order: Order) -> None:
        """Flag the order dead and drop its quantity; O(1) whatever the level's length."""
        order.live = False
        level = self.levels[order.price]
        level.qty -= order.remaining
        level.count -= 1
        if level.count == 0:
            self.drop(order.price)
        elif level.front() is order:
            level.pop_front()

    def drop(self, price: int) -> None:
        """Delete an emptied level (its heap entry goes lazily, in ``best``)."""
        del self.levels[price]
        if price == self.top:
            self.top = 0

    def prices(self) -> list[int]:
        """Level prices best-first."""
        return sorted(self.levels, reverse=self.is_bid)

    def depth(self, n: int) -> list[tuple[int, int]]:
        levels = self.levels
        return [(p, levels[p].qty) for p in self.prices()[:n]]

    def orders_in_priority(self) -> list[Order]:
        out: list[Order] = []
        for p in self.prices():
            out.extend(self.levels[p].live_orders())
        return out


@final
class OrderBook:
    __slots__ = ("asks", "bids", "market")

    def __init__(self, market: str) -> None:
        self.market = market
        self.bids = BookSide(True)
        self.asks = BookSide(False)

    def side(self, is_buy: bool) -> BookSide:
        return self.bids if is_buy else self.asks

    def depth(self, n: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """L2 snapshot: (bids, asks) of (price, total qty), best-first, ``n`` levels each."""
        return self.bids.depth(n), self.asks.depth(n)

    def is_crossed(self) -> bool:
        bid = self.bids.best()
        ask = self.asks.best()
        return bid is not None and ask is not None and bid >= ask
