"""Garbage-collector policy for a process that runs a node (server, benchmarks, drills).

Full collections walk the whole book (tens of ms at 1M orders), so they never run on their own;
the owner of the process runs them on a timer (the gateway's health loop) through
``FullCollections``. The young threshold is a trade-off, measured with ``bench/durable.py`` and
``bench/gateway.py``: 20,000 gives the durable node ~20% more throughput (every batch's
per-command result lists survive until acknowledged, which triggers young collections) but
doubled the WebSocket p99 at 5,000 orders/s (12 ms vs 5.6 ms); CPython's 700 keeps each pause
tiny, and latency wins here.
"""

import gc

YOUNG_THRESHOLD = 700
NEVER = 1_000_000
#: every Nth periodic full collection is a sweep of everything (hourly at one a minute)
SWEEP_EVERY = 60


def apply_gc_policy(young: int = YOUNG_THRESHOLD) -> None:
    gc.set_threshold(young, 10, NEVER)


class FullCollections:
    """Periodic full collections that walk only what survived since the previous one.

    Each one freezes its survivors (``gc.freeze``: they are long-lived, mostly resting orders
    and accounts), so the next walks one interval's worth of objects instead of the whole
    state: a full walk took 169-271 ms on a loaded 2-core VM, inside the latency phases. Frozen
    objects are still freed by reference counting; only cycles among them wait, until every
    ``sweep_every``-th collection unfreezes everything and walks it all (0: never)."""

    def __init__(self, sweep_every: int = SWEEP_EVERY) -> None:
        self.sweep_every = sweep_every
        self.count = 0

    def run(self) -> int:
        """One full collection; returns how many unreachable objects it found."""
        self.count += 1
        if self.sweep_every and self.count % self.sweep_every == 0:
            gc.unfreeze()
        found = gc.collect()
        gc.freeze()
        return found
