"""The native key heap against ``heapq`` over the same (key, account, stamp) tuples: any mix of
pushes, pops and rebuilds pops the same entries in the same order, ties on key and account
included, and keys past the machine-word range too (``ALWAYS_LONG`` is 2**63)."""

import heapq

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.core.perp import keyheap
from bastion.core.perp.keyheap import Item

KEYS = st.one_of(st.integers(-3, 3), st.sampled_from([2**63, -(2**63), 2**62, -(2**62) - 1]),
                 st.integers(-(2**70), 2**70))
OPS = st.lists(st.one_of(st.tuples(st.just("push"), KEYS, st.integers(0, 3)),
                         st.just(("pop", 0, 0)), st.just(("rebuild", 0, 0))), max_size=300)


@settings(max_examples=150, deadline=None)
@given(OPS)
def test_pops_in_heapq_order(ops: list[tuple[str, int, int]]) -> None:
    heap: keyheap.Heap = []
    model: list[tuple[int, int, int]] = []
    stamp = 0
    for op, key, account in ops:
        if op == "push":
            stamp += 1
            keyheap.push(heap, Item(key, account, stamp))
            heapq.heappush(model, (key, account, stamp))
        elif op == "pop" and model:
            got = keyheap.pop(heap)
            assert (got.key, got.account, got.stamp) == heapq.heappop(model)
        elif op == "rebuild":
            keyheap.heapify(heap)
        assert len(heap) == len(model)
        if model:
            assert (heap[0].key, heap[0].account, heap[0].stamp) == model[0]
    rest = [keyheap.pop(heap) for _ in range(len(heap))]
    assert [(i.key, i.account, i.stamp) for i in rest] == sorted(model)


def test_heapify_of_a_shuffled_list() -> None:
    items = [Item((i * 7919) % 101 - 50, i % 5, i) for i in range(1, 500)]
    keyheap.heapify(items)
    order = [keyheap.pop(items) for _ in range(len(items))]
    keys = [(i.key, i.account, i.stamp) for i in order]
    assert keys == sorted(keys) and len(keys) == 499
