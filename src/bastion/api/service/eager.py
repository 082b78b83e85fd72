"""Run a coroutine without a task: at once up to its first suspension, then on from each
awaited future's completion callback.

For order entry over a WebSocket, where a task per order was the largest single cost of
starting one (its creation, its registration in asyncio's task set, and a loop turn before
it even parses the order): the coroutine runs in the frame's own callback until it waits for
the journal, and the journal's completion resumes it, as it would a task. Nothing can
cancel or await it, so it must handle its own errors (an escaping one is logged).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from functools import partial
from typing import Any

log = logging.getLogger("bastion.api")


def start_eagerly(coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro`` now until it waits, and to its end as what it waits for completes."""
    _step(coro)


def _step(coro: Coroutine[Any, Any, None], _done: object = None) -> None:
    try:
        waited = coro.send(None)
    except StopIteration:
        return
    except Exception:
        log.exception("eagerly started coroutine failed")
        return
    if waited is None:  # a bare yield (``asyncio.sleep(0)``): go on next turn
        asyncio.get_running_loop().call_soon(_step, coro)
        return
    # what a task does with the future its coroutine awaits: take it as handled, resume
    # the coroutine once it is done (the coroutine reads its result or exception itself)
    waited._asyncio_future_blocking = False
    waited.add_done_callback(partial(_step, coro))
