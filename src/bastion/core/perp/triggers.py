"""TP/SL orders held off-book, indexed by trigger price so a mark update pops only what fired.

Direction: a stop buys when the mark rises to the trigger and sells when it falls to it; a
take-profit the other way round. Heaps use lazy deletion (a cancelled trigger is just absent from
``by_id``); they are derived state, rebuilt from the exported trigger list on restore.
"""

from heapq import heapify, heappop, heappush

from bastion.core.perp.state import Trigger

TRIGGER_TYPES = frozenset(("stop_market", "stop_limit", "take_profit", "take_profit_limit"))
LIMIT_TYPES = frozenset(("stop_limit", "take_profit_limit"))


def direction(order_type: str, side: str) -> str:
    """"up" fires when mark >= trigger price, "down" when mark <= trigger price."""
    stop = order_type.startswith("stop")
    return "up" if stop == (side == "buy") else "down"


def fires(trigger: Trigger, mark: int) -> bool:
    if trigger.direction == "up":
        return mark >= trigger.trigger_price
    return mark <= trigger.trigger_price


class TriggerBook:
    __slots__ = ("by_id", "client_ids", "count", "down", "up")

    def __init__(self) -> None:
        self.by_id: dict[int, Trigger] = {}
        self.client_ids: dict[tuple[int, str], int] = {}
        self.up: dict[str, list[tuple[int, int]]] = {}     # (price, id): min first
        self.down: dict[str, list[tuple[int, int]]] = {}   # (-price, id): max first
        self.count: dict[str, int] = {}

    def add(self, t: Trigger) -> None:
        self.by_id[t.trigger_id] = t
        if t.client_id:
            self.client_ids[(t.account, t.client_id)] = t.trigger_id
        if t.direction == "up":
            heappush(self.up.setdefault(t.market, []), (t.trigger_price, t.trigger_id))
        else:
            heappush(self.down.setdefault(t.market, []), (-t.trigger_price, t.trigger_id))
        live = self.count[t.market] = self.count.get(t.market, 0) + 1
        if len(self.up.get(t.market, ())) + len(self.down.get(t.market, ())) > 2 * live + 1024:
            self._rebuild(t.market)

    def remove(self, trigger_id: int) -> Trigger | None:
        t = self.by_id.pop(trigger_id, None)
        if t is not None:
            self.count[t.market] -= 1
            if t.client_id:
                self.client_ids.pop((t.account, t.client_id), None)
        return t

    def _rebuild(self, market: str) -> None:
        """Drop cancelled entries (called when they dominate the market's heaps)."""
        live = [t for t in self.by_id.values() if t.market == market]
        up = [(t.trigger_price, t.trigger_id) for t in live if t.direction == "up"]
        down = [(-t.trigger_price, t.trigger_id) for t in live if t.direction != "up"]
        heapify(up)
        heapify(down)
        self.up[market] = up
        self.down[market] = down

    def due(self, market: str, mark: int) -> list[Trigger]:
        """Remove and return the triggers the mark has crossed, oldest (lowest id) first."""
        out: list[Trigger] = []
        by_id = self.by_id
        heap = self.up.get(market)
        while heap and heap[0][0] <= mark:
            _, tid = heappop(heap)
            t = by_id.get(tid)
            if t is not None and t.market == market and t not in out:
                out.append(t)
        heap = self.down.get(market)
        while heap and -heap[0][0] >= mark:
            _, tid = heappop(heap)
            t = by_id.get(tid)
            if t is not None and t.market == market and t not in out:
                out.append(t)
        out.sort(key=lambda t: t.trigger_id)
        for t in out:
            self.remove(t.trigger_id)
        return out

    def of_market(self, market: str) -> list[Trigger]:
        return sorted((t for t in self.by_id.values() if t.market == market),
                      key=lambda t: t.trigger_id)
