"""Token-bucket rate limits per API key and per client IP, answered with a clear 429.

Buckets refill continuously (``rate`` tokens/s up to ``burst``); a refused request names the
limit and says when to retry, so a well-behaved client backs off instead of hammering.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from bastion.api import errors as A
from bastion.api.errors import ApiError


class Limiter:
    """Many buckets of one kind (e.g. per IP). ``rate <= 0`` disables the limit."""

    __slots__ = ("_buckets", "_clock", "_last_sweep", "burst", "kind", "rate", "refused")

    def __init__(self, kind: str, rate: float, burst: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.kind = kind
        self.rate = rate
        self.burst = max(burst, 1.0)
        self._clock = clock
        self._buckets: dict[str, list[float]] = {}
        self._last_sweep = clock()
        #: requests refused so far (``/metrics``)
        self.refused = 0

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def hit(self, who: str, cost: float = 1.0) -> None:
        """Take ``cost`` tokens from ``who``'s bucket or raise a 429 ``ApiError``."""
        if self.rate <= 0:
            return
        now = self._clock()
        bucket = self._buckets.get(who)
        if bucket is None:
            bucket = self._buckets[who] = [self.burst, now]
        else:
            bucket[0] = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
            bucket[1] = now
        if bucket[0] < cost:
            wait = (cost - bucket[0]) / self.rate
            self.refused += 1
            raise ApiError(A.RATE_LIMITED,
                           f"{self.kind} rate limit of {self.rate:g} requests/s (burst "
                           f"{self.burst:g}) exceeded; retry in {wait * 1000:.0f} ms",
                           headers={"Retry-After": str(max(1, math.ceil(wait)))})
        bucket[0] -= cost
        if now - self._last_sweep > 60:
            self._sweep(now)

    def pause(self, who: str, cost: float = 1.0) -> float:
        """Take ``cost`` tokens, going into debt if need be; the seconds ``who`` must wait
        until the debt is paid (0 when it had enough). For backpressure instead of a 429: the
        caller stops reading from that client for that long."""
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        bucket = self._buckets.get(who)
        if bucket is None:
            bucket = self._buckets[who] = [self.burst, now]
        else:
            bucket[0] = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
            bucket[1] = now
        bucket[0] -= cost
        if now - self._last_sweep > 60:
            self._sweep(now)
        return -bucket[0] / self.rate if bucket[0] < 0 else 0.0

    def used(self, who: str) -> float:
        """Tokens ``who`` has taken and not yet regained, at this moment (0 for a full or
        unknown bucket): above 0 only while it sends faster than ``rate``, refused once it
        reaches ``burst``. Reads the bucket without changing it."""
        bucket = self._buckets.get(who)
        if bucket is None or self.rate <= 0:
            return 0.0
        tokens = min(self.burst, bucket[0] + (self._clock() - bucket[1]) * self.rate)
        return max(0.0, self.burst - tokens)

    def forget(self, who: str) -> None:
        self._buckets.pop(who, None)

    def _sweep(self, now: float) -> None:
        """Forget buckets that have been full for a while (bounded memory under many IPs)."""
        self._last_sweep = now
        idle = self.burst / self.rate + 60
        for who in [w for w, b in self._buckets.items() if now - b[1] > idle]:
            del self._buckets[who]
