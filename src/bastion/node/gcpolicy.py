"""Garbage-collector policy for a process that runs a node (server, benchmarks, drills).

Full collections walk the whole book (tens of ms at 1M orders), so they never run on their own;
the owner of the process runs them on a timer (the gateway's health loop). The young threshold
is a trade-off, measured with ``bench/durable.py`` and ``bench/gateway.py``: 20,000 gives the
durable node ~20% more throughput (every batch's per-command result lists survive until
acknowledged, which triggers young collections) but doubled the WebSocket p99 at 5,000
orders/s (12 ms vs 5.6 ms); CPython's 700 keeps each pause tiny, and latency wins here.
"""

import gc

YOUNG_THRESHOLD = 700
NEVER = 1_000_000


def apply_gc_policy(young: int = YOUNG_THRESHOLD) -> None:
    gc.set_threshold(young, 10, NEVER)
