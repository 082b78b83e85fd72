"""Liquidation index: which accounts might have crossed maintenance after a mark update or a
funding tick.

Per market, longs sit in a max-heap and shorts in a min-heap keyed by a threshold price; a mark
update pops only the entries it crossed, so its cost does not grow with the number of accounts.
Funding works the same way: longs pay when the funding index rises and shorts when it falls, so
each entry also carries the funding index at which its funding allowance is used up, in a
min-heap (longs) or max-heap (shorts) per market; a funding tick pops only what it crossed.

Cross margin makes one account's liquidation point depend on every market it holds. The margin
cushion ``equity - maintenance`` is a sum of one term per market (``calc.cushion_term``) minus
the funding owed, so an account's cushion is split into a funding allowance and a price budget,
each shared across its positions in proportion to notional; each market gets the price at which
its term would have eaten its price share (``calc.threshold``) and the funding index at which
its funding would have eaten its allowance. While no key is crossed the cushion is provably
>= 0; crossing one re-checks and re-keys the account.

A funding key is hard: the tick that crosses it re-checks the account. Each entry also carries a
soft funding key at half the allowance; after a tick, a few accounts per command whose soft key
is crossed are re-checked from the top of the funding heaps (``drain_funding``), together with
the garbage there. So allowances that run out together are renewed over the commands that
follow, while half of each still guards its account, instead of all in one tick; and the tick
pops little garbage. Re-checking early never changes an outcome: a hard key the drain did not
reach still forces the re-check in the tick that crosses it. Entries are versioned and deleted lazily;
heaps are rebuilt when mostly garbage. Nothing here is exported: the ledger's restore re-keys
every account from state, and which accounts get *checked* never changes which accounts get
*liquidated*.
"""

from collections.abc import Iterable
from heapq import heapify, heappop, heappush

Key = tuple[int, str]  # (account, settle asset)
#: One market's entry: (is_long, price key, hard funding-index key, soft funding-index key).
Entry = tuple[bool, int, int, int]
Heap = list[tuple[int, int, int]]
Accounts = set[int]
#: garbage heap entries allowed per live one before ``compact`` rebuilds a market's heaps
GARBAGE = 4


class LiqIndex:
    __slots__ = ("fund_longs", "fund_shorts", "keys", "live", "longs", "shorts", "version")

    def __init__(self) -> None:
        self.longs: dict[str, Heap] = {}        # (-price key, account, version)
        self.shorts: dict[str, Heap] = {}       # (price key, account, version)
        self.fund_longs: dict[str, Heap] = {}   # (funding key, account, version)
        self.fund_shorts: dict[str, Heap] = {}  # (-funding key, account, version)
        #: settle asset -> account -> version of its live entries. Keyed by plain ints, so the
        #: big inner dicts are never tracked by the garbage collector (a dict keyed by fresh
        #: tuples is, and every young collection would then walk all of its entries).
        self.version: dict[str, dict[int, int]] = {}
        #: current entries: settle asset -> account -> market -> entry (int-keyed, like
        #: ``version``)
        self.keys: dict[str, dict[int, dict[str, Entry]]] = {}
        #: live entries per market (the rest of each heap is garbage)
        self.live: dict[str, int] = {}

    def set(self, who: Key, entries: dict[str, Entry]) -> None:
        """Replace an account's entries (all its markets at once)."""
        account, asset = who
        versions = self.version.get(asset)
        if versions is None:
            versions = self.version[asset] = {}
        version = versions.get(account, 0) + 1
        versions[account] = version
        keys = self.keys.get(asset)
        if keys is None:
            keys = self.keys[asset] = {}
        live = self.live
        for market in keys.get(account, ()):
            live[market] -= 1
        for market in entries:
            live[market] = live.get(market, 0) + 1
        if entries:
            keys[account] = entries
        else:
            keys.pop(account, None)
        for market, (is_long, key, fkey, _) in entries.items():
            heaps = self.longs if is_long else self.shorts
            price = heaps.get(market)
            if price is None:
                price = heaps[market] = []
            heaps = self.fund_longs if is_long else self.fund_shorts
            fund = heaps.get(market)
            if fund is None:
                fund = heaps[market] = []
            if is_long:
                heappush(price, (-key, account, version))
                heappush(fund, (fkey, account, version))
            else:
                heappush(price, (key, account, version))
                heappush(fund, (-fkey, account, version))

    def version_of(self, who: Key) -> int:
        """The version of the account's live entries (0: never keyed)."""
        return self.version.get(who[1], {}).get(who[0], 0)

    def entry(self, who: Key, market: str) -> Entry | None:
        """The account's live entry in ``market``, if keyed there."""
        return self.keys.get(who[1], {}).get(who[0], {}).get(market)

    def forget(self, who: Key) -> None:
        if who[0] in self.keys.get(who[1], {}):
            self.set(who, {})

    def _pop(self, heap: Heap | None, bound: int, asset: str, found: Accounts) -> None:
        """Pop entries with first element <= bound; keep the accounts of the live ones."""
        if not heap:
            return
        version = self.version.get(asset, {})
        while heap and heap[0][0] <= bound:
            _, account, v = heappop(heap)
            if version.get(account) == v:
                found.add(account)

    def crossed(self, market: str, asset: str, mark: int) -> list[int]:
        """Pop every live entry of ``market`` the mark has crossed; the caller must re-key the
        accounts returned (sorted, deduplicated)."""
        found: Accounts = set()
        self._pop(self.longs.get(market), -mark, asset, found)
        self._pop(self.shorts.get(market), mark, asset, found)
        return sorted(found)

    def crossed_funding(self, market: str, asset: str, index: int) -> list[int]:
        """Pop every live entry of ``market`` whose funding allowance ``index`` has used up."""
        found: Accounts = set()
        self._pop(self.fund_longs.get(market), index, asset, found)
        self._pop(self.fund_shorts.get(market), -index, asset, found)
        return sorted(found)

    def drain_funding(self, market: str, asset: str, index: int, limit: int
                      ) -> tuple[list[int], bool]:
        """Pop, from the tops of ``market``'s funding heaps, garbage and up to ``limit`` live
        entries whose soft key ``index`` has crossed (the caller re-checks those accounts).
        Returns them and whether the budget ran out before the tops were clean."""
        found: list[int] = []
        version = self.version.get(asset, {})
        keys = self.keys.get(asset, {})
        pops = 0
        for heap, sign in ((self.fund_longs.get(market), 1), (self.fund_shorts.get(market), -1)):
            while heap:
                if len(found) >= limit or pops >= 4 * limit:
                    return found, True
                _, account, v = heap[0]
                if version.get(account) == v:
                    if sign * keys[account][market][3] > sign * index:
                        break
                    found.append(account)
                heappop(heap)
                pops += 1
        return found, False

    def funding_pending(self, market: str, asset: str, index: int) -> bool:
        """Whether ``drain_funding`` has work in ``market`` at ``index``."""
        version = self.version.get(asset, {})
        keys = self.keys.get(asset, {})
        for heap, sign in ((self.fund_longs.get(market), 1), (self.fund_shorts.get(market), -1)):
            if heap:
                _, account, v = heap[0]
                if version.get(account) != v or keys[account][market][3] * sign <= sign * index:
                    return True
        return False

    def compact(self, market: str, asset: str, accounts: Iterable[int]) -> None:
        """Rebuild one market's heaps from the live entries of ``accounts`` (its position
        holders) once garbage is ``GARBAGE`` times the live entries: amortised O(1) per re-key
        (a rebuild costs about as much as ``live`` re-keys, and comes every ``GARBAGE * live``)."""
        total = len(self.longs.get(market, ())) + len(self.shorts.get(market, ()))
        if total < (GARBAGE + 1) * self.live.get(market, 0) + 4096:
            return
        heaps: tuple[Heap, Heap, Heap, Heap] = ([], [], [], [])
        keys = self.keys.get(asset, {})
        for account in accounts:
            entry = keys.get(account, {}).get(market)
            if entry is None:
                continue
            is_long, key, fkey, _ = entry
            v = self.version[asset][account]
            if is_long:
                heaps[0].append((-key, account, v))
                heaps[2].append((fkey, account, v))
            else:
                heaps[1].append((key, account, v))
                heaps[3].append((-fkey, account, v))
        for heap in heaps:
            heapify(heap)
        self.longs[market], self.shorts[market] = heaps[0], heaps[1]
        self.fund_longs[market], self.fund_shorts[market] = heaps[2], heaps[3]

    def size(self, market: str) -> int:
        """Price-heap entries of ``market``, garbage included."""
        return len(self.longs.get(market, ())) + len(self.shorts.get(market, ()))
