"""Liquidation index: which accounts might have crossed maintenance after a mark update.

Per market, longs sit in a max-heap and shorts in a min-heap keyed by a threshold price; a mark
update pops only the entries it crossed, so its cost does not grow with the number of accounts.

Cross margin makes one account's liquidation point depend on every market it holds. The margin
cushion ``equity - maintenance`` is a sum of one term per market (``calc.cushion_term``), so an
account's cushion is split across its positions in proportion to notional and each market gets
the price at which its term would have eaten its share (``calc.threshold``). While no market has
crossed its threshold the cushion is provably >= 0; crossing one re-checks and re-keys the
account. Entries are versioned and deleted lazily; heaps are rebuilt when mostly garbage.
Nothing here is exported: ``PerpEngine.restore`` re-keys every account from state, and which
accounts get *checked* never changes which accounts get *liquidated*.
"""

from collections.abc import Iterable
from heapq import heapify, heappop, heappush

Key = tuple[int, str]  # (account, settle asset)


class LiqIndex:
    __slots__ = ("keys", "live", "longs", "shorts", "version")

    def __init__(self) -> None:
        self.longs: dict[str, list[tuple[int, int, int]]] = {}   # (-key, account, version)
        self.shorts: dict[str, list[tuple[int, int, int]]] = {}  # (key, account, version)
        self.version: dict[Key, int] = {}
        #: current entries per account: market -> (is_long, key)
        self.keys: dict[Key, dict[str, tuple[bool, int]]] = {}
        #: live entries per market (the rest of each heap is garbage)
        self.live: dict[str, int] = {}

    def set(self, who: Key, asset_entries: dict[str, tuple[bool, int]]) -> None:
        """Replace an account's entries (all its markets at once)."""
        version = self.version.get(who, 0) + 1
        self.version[who] = version
        account = who[0]
        live = self.live
        for market in self.keys.get(who, ()):
            live[market] -= 1
        for market in asset_entries:
            live[market] = live.get(market, 0) + 1
        if asset_entries:
            self.keys[who] = asset_entries
        else:
            self.keys.pop(who, None)
        for market, (is_long, key) in asset_entries.items():
            if is_long:
                heap = self.longs.setdefault(market, [])
                heappush(heap, (-key, account, version))
            else:
                heap = self.shorts.setdefault(market, [])
                heappush(heap, (key, account, version))

    def forget(self, who: Key) -> None:
        if who in self.keys:
            self.set(who, {})

    def crossed(self, market: str, asset: str, mark: int) -> list[int]:
        """Pop every live entry of ``market`` the mark has crossed; the caller must re-key the
        accounts returned (sorted, deduplicated)."""
        found: set[int] = set()
        version = self.version
        heap = self.longs.get(market)
        if heap:
            while heap and -heap[0][0] >= mark:
                _, account, v = heappop(heap)
                if version.get((account, asset)) == v:
                    found.add(account)
        heap = self.shorts.get(market)
        if heap:
            while heap and heap[0][0] <= mark:
                _, account, v = heappop(heap)
                if version.get((account, asset)) == v:
                    found.add(account)
        return sorted(found)

    def compact(self, market: str, asset: str, accounts: Iterable[int]) -> None:
        """Rebuild one market's heaps from the live entries of ``accounts`` (its position
        holders) once garbage dominates: amortised O(1) per re-key."""
        total = len(self.longs.get(market, ())) + len(self.shorts.get(market, ()))
        if total < 2 * self.live.get(market, 0) + 4096:
            return
        live_long: list[tuple[int, int, int]] = []
        live_short: list[tuple[int, int, int]] = []
        for account in accounts:
            who = (account, asset)
            entry = self.keys.get(who, {}).get(market)
            if entry is None:
                continue
            is_long, key = entry
            v = self.version[who]
            if is_long:
                live_long.append((-key, account, v))
            else:
                live_short.append((key, account, v))
        heapify(live_long)
        heapify(live_short)
        self.longs[market] = live_long
        self.shorts[market] = live_short

    def size(self, market: str) -> int:
        return len(self.longs.get(market, ())) + len(self.shorts.get(market, ()))
