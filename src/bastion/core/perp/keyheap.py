"""A binary min-heap of liquidation-index entries: native records with int fields, ordered by
(key, account, stamp), sifted by compiled code.

``heapq`` over ``(key, account, stamp)`` tuples boxes three ints and builds a tuple per push,
and every sift step compares the tuples element by element through Python's generic compare;
a re-key after a fill pushes one or two entries, so that was ~6% of a perpetual command. Here a
push allocates one record and a sift step compares machine ints. The order is the tuples' order
exactly (stamps are unique, so it is total): the heap pops the same entries in the same order.
"""

from typing import final

from mypy_extensions import mypyc_attr


@final
@mypyc_attr(acyclic=True)
class Item:
    """One heap entry: ``key`` (already negated for a max-heap), the account, and the stamp that
    keeps it live while its slot holds the same one."""

    __slots__ = ("account", "key", "stamp")

    def __init__(self, key: int, account: int, stamp: int) -> None:
        self.key = key
        self.account = account
        self.stamp = stamp

    def __repr__(self) -> str:
        return f"Item(key={self.key}, account={self.account}, stamp={self.stamp})"


Heap = list[Item]


def before(a: Item, b: Item) -> bool:
    """``(a.key, a.account, a.stamp) < (b.key, b.account, b.stamp)``."""
    if a.key != b.key:
        return a.key < b.key
    if a.account != b.account:
        return a.account < b.account
    return a.stamp < b.stamp


def push(heap: Heap, item: Item) -> None:
    heap.append(item)
    pos = len(heap) - 1
    while pos > 0:
        up = (pos - 1) >> 1
        parent = heap[up]
        if not before(item, parent):
            break
        heap[pos] = parent
        pos = up
    heap[pos] = item


def _sift_down(heap: Heap, pos: int, item: Item) -> None:
    """Put ``item`` at ``pos`` and move it down to where it belongs."""
    n = len(heap)
    child = 2 * pos + 1
    while child < n:
        right = child + 1
        if right < n and before(heap[right], heap[child]):
            child = right
        smaller = heap[child]
        if not before(smaller, item):
            break
        heap[pos] = smaller
        pos = child
        child = 2 * pos + 1
    heap[pos] = item


def pop(heap: Heap) -> Item:
    """Remove and return the smallest entry (the heap must not be empty)."""
    last = heap.pop()
    if not heap:
        return last
    top = heap[0]
    _sift_down(heap, 0, last)
    return top


def heapify(heap: Heap) -> None:
    for pos in range(len(heap) // 2 - 1, -1, -1):
        _sift_down(heap, pos, heap[pos])
