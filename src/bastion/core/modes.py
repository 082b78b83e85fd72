"""What each market mode accepts. One table, so the API, status page and engine agree.

``recovery`` is OKX's post-outage "recovery protection period": cancels, post-only orders and
margin additions, no matching, and a timed return to ``open``.
"""

from typing import Final

MODES: Final = ("open", "post_only", "cancel_only", "recovery", "halted", "closed")

#: Modes in which liquidations, funding accrual and TP/SL triggers are paused.
RESTRICTED: Final = frozenset(("post_only", "cancel_only", "recovery", "halted"))


def accepts_order(mode: str, post_only: bool) -> bool:
    if mode == "open":
        return True
    return post_only and (mode == "post_only" or mode == "recovery")


def accepts_cancel(mode: str) -> bool:
    return mode != "closed"

