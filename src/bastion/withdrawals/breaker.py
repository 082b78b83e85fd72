"""Retry timing for calls to an outside party: exponential backoff with full jitter, and a
circuit breaker (one per asset and connector) so a dead custody service costs one probe per
cool-down instead of a retry storm."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delay after the n-th consecutive failure: half of min(cap, base * 2**n) plus a
    uniform jitter over the other half ("equal jitter"): retries of many workers spread out,
    yet none retries at once (AWS Architecture Blog, "Exponential Backoff And Jitter")."""

    base: float = 0.1
    cap: float = 5.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int) -> float:
        ceiling = min(self.cap, self.base * (1 << min(attempt, 30)))
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)


@dataclass
class Breaker:
    """closed -> (``threshold`` consecutive failures) -> open -> (cool-down elapsed) ->
    half_open: one probe; success closes, failure re-opens with a longer cool-down.

    ``down_since`` is when the current run of failures began (None when healthy): the worker
    reports it as the outage start and pauses the asset once it is old enough."""

    threshold: int = 3
    backoff: Backoff = field(default_factory=Backoff)
    state: str = "closed"
    failures: int = 0
    retry_at: float = 0.0
    down_since: float | None = None

    def allow(self, now: float) -> bool:
        """May a call go out now? Not before the back-off of the last failure has passed;
        after an open breaker's cool-down the next call is the probe (half-open)."""
        if now < self.retry_at:
            return False
        if self.state == "open":
            self.state = "half_open"
        return True

    def success(self) -> None:
        self.state = "closed"
        self.failures = 0
        self.retry_at = 0.0
        self.down_since = None

    def failure(self, now: float) -> None:
        self.failures += 1
        if self.down_since is None:
            self.down_since = now
        self.retry_at = now + self.backoff.delay(self.failures - 1)
        if self.state == "half_open" or self.failures >= self.threshold:
            self.state = "open"

    def wait(self, now: float) -> float:
        """Seconds until a call may go out (0 when it may now)."""
        return max(0.0, self.retry_at - now)
