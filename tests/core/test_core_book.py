"""The book's cached best price against the levels themselves, over random adds, removes and
the matcher's level drops (a stale cache would price every later order wrongly)."""

import random

import pytest

from bastion.core.book import BookSide
from bastion.core.records import Order


def _order(oid: int, price: int, qty: int) -> Order:
    return Order(oid, 1, "X", "buy", price, qty, qty, 0, oid)


@pytest.mark.parametrize("is_bid", [True, False])
def test_best_follows_the_levels(is_bid: bool) -> None:
    rng = random.Random(7 if is_bid else 8)
    side = BookSide(is_bid)
    live: list[Order] = []
    for oid in range(1, 6_000):
        roll = rng.random()
        if roll < 0.5 or not live:
            order = _order(oid, rng.randrange(90, 110), rng.randrange(1, 5))
            side.add(order)
            live.append(order)
        elif roll < 0.9:
            order = live.pop(rng.randrange(len(live)))
            side.remove(order)
        else:  # the matcher empties the best level and drops it
            price = side.best()
            assert price is not None
            for order in [o for o in live if o.price == price]:
                live.remove(order)
                order.live = False
            side.drop(price)
        prices = {o.price for o in live}
        want = (max(prices) if is_bid else min(prices)) if prices else None
        assert side.best() == want
        assert set(side.levels) == prices



@pytest.mark.parametrize("front_share", [1.0, 0.7])
def test_a_level_stays_fifo_through_front_trims(front_share: float) -> None:
    """Orders leave a level's front (cancels, fills) while others join its back: the dead
    prefix is trimmed now and then, and the live orders keep their time order. With every
    order leaving from the front, the list stays within twice the live orders."""
    rng = random.Random(9)
    side = BookSide(False)
    queue: list[Order] = []
    for oid in range(1, 3_000):
        if queue and rng.random() < 0.45:
            at = 0 if rng.random() < front_share else rng.randrange(len(queue))
            side.remove(queue.pop(at))
        else:
            order = _order(oid, 100, 1)
            side.add(order)
            queue.append(order)
        if not queue:
            assert 100 not in side.levels
            continue
        level = side.levels[100]
        assert level.live_orders() == queue and level.count == len(queue)
        if front_share == 1.0:
            assert level.front() is queue[0]
            assert len(level.orders) <= 2 * len(queue) + 64
