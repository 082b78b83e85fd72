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
reach still forces the re-check in the tick that crosses it.

Heap entries are stamped and deleted lazily: an entry is live while its account's ``Slot`` in
that market holds its stamp. A re-key that moves a key away from the mark keeps the old entry,
which pops earlier than needed, instead of pushing a new one (about half of all re-keys after a
fill); the pop then finds the true key not crossed and pushes it. Heaps are rebuilt when mostly
garbage. Nothing here is exported: the ledger's restore re-keys
every account from state, and which accounts get *checked* never changes which accounts get
*liquidated*.
"""

from typing import Final

from mypy_extensions import mypyc_attr

from bastion.core.perp.keyheap import Heap, Item, heapify, pop, push

Key = tuple[int, str]  # (account, settle asset)
#: One market's entry: (is_long, price key, hard funding-index key, soft funding-index key).
Entry = tuple[bool, int, int, int]
Accounts = set[int]
#: garbage heap entries allowed per live one before ``compact`` rebuilds a market's heaps
GARBAGE = 4
#: ... and at least this many in all (small markets never pay for rebuilds)
REBUILD_FLOOR = 4096
#: ``Slot.stamp``/``fstamp`` when the slot has no entry in that heap (popped, to be re-keyed)
NONE: Final = -1


@mypyc_attr(acyclic=True)
class Slot:
    """One account's keys in one market (``key``, ``fkey``, ``soft``), and the keys its heap
    entries hold (``heap_key``, ``heap_fkey``; the entries carry ``stamp``/``fstamp``). A heap
    key may be more conservative than the true one (it pops earlier): a re-key that moves a key
    away from the mark keeps the old heap entry instead of pushing a new one, and a pop that
    finds the true key not crossed pushes it then. ``AccountKeys`` is one too (its first
    market's)."""

    __slots__ = ("fkey", "fstamp", "heap_fkey", "heap_key", "is_long", "key", "soft", "stamp")

    def __init__(self, is_long: bool = False, key: int = 0, fkey: int = 0,
                 soft: int = 0) -> None:
        self.is_long = is_long
        self.key = key
        self.fkey = fkey
        self.soft = soft
        self.heap_key = key
        self.heap_fkey = fkey
        self.stamp = NONE
        self.fstamp = NONE


def _reset(slot: Slot, is_long: bool, key: int, fkey: int, soft: int) -> None:
    """Fresh keys and no heap entries: the slot's old entries no longer hold its stamps."""
    slot.is_long = is_long
    slot.key = key
    slot.fkey = fkey
    slot.soft = soft
    slot.heap_key = key
    slot.heap_fkey = fkey
    slot.stamp = NONE
    slot.fstamp = NONE


@mypyc_attr(acyclic=True)
class AccountKeys(Slot):
    """One account's liquidation-index record: its slots by market, and how often it was
    re-keyed. The record is itself the slot of one market (``market``; "" while it has no
    slot), the only one in the usual case; ``more`` holds the slots of any other markets. The
    margin ledger's record of the account is one (``MarginAccount`` extends it), so a re-key
    and a heap pop reach the keys in the record they read anyway: no separate keys object and
    slot per account, two cold objects fewer among many accounts. Kept once made (also with no
    slots left)."""

    __slots__ = ("market", "more", "version")

    def __init__(self) -> None:
        super().__init__()
        self.market = ""
        self.more: dict[str, Slot] | None = None
        self.version = 0

    def slot(self, market: str) -> Slot | None:
        """The slot in ``market``, if keyed there."""
        if self.market == market:
            return self
        more = self.more
        return more.get(market) if more is not None else None

    def slots(self) -> dict[str, Slot]:
        """Every slot by market (the record's own first)."""
        found: dict[str, Slot] = {self.market: self} if self.market else {}
        if self.more:
            found.update(self.more)
        return found

    def count(self) -> int:
        more = self.more
        return (1 if self.market else 0) + (len(more) if more is not None else 0)

    def add(self, market: str) -> Slot:
        """A new slot for ``market`` (not keyed there yet): the record's own if free."""
        if not self.market:
            self.market = market
            return self
        slot = Slot()
        more = self.more
        if more is None:
            more = self.more = {}
        more[market] = slot
        return slot

    def drop(self, market: str) -> None:
        """Remove the slot of ``market``. The record's own slot takes over another market's,
        if any, so it is free only while there are no slots: a market keyed alone sits here."""
        more = self.more
        if self.market != market:
            if more is not None:
                del more[market]
            return
        self.market = ""
        if more:
            for name, slot in more.items():
                self.market = name
                self.is_long = slot.is_long
                self.key = slot.key
                self.fkey = slot.fkey
                self.soft = slot.soft
                self.heap_key = slot.heap_key
                self.heap_fkey = slot.heap_fkey
                self.stamp = slot.stamp
                self.fstamp = slot.fstamp
                break
            del more[self.market]


class LiqIndex:
    __slots__ = ("fund_longs", "fund_shorts", "keys", "live", "longs", "shorts", "stamps")

    def __init__(self) -> None:
        self.longs: dict[str, Heap] = {}        # (-price key, account, stamp)
        self.shorts: dict[str, Heap] = {}       # (price key, account, stamp)
        self.fund_longs: dict[str, Heap] = {}   # (funding key, account, stamp)
        self.fund_shorts: dict[str, Heap] = {}  # (-funding key, account, stamp)
        #: settle asset -> account -> its slots and re-key count. Keyed by plain ints, and the
        #: records are acyclic, so the big inner dicts are never tracked by the garbage
        #: collector (a dict keyed by fresh tuples is, and every young collection would then
        #: walk all of its entries).
        self.keys: dict[str, dict[int, AccountKeys]] = {}
        #: live entries per market (the rest of each heap is garbage)
        self.live: dict[str, int] = {}
        #: the last stamp given to a heap entry: an entry is live while its slot holds its stamp
        self.stamps = 0

    def account_keys(self, who: Key) -> AccountKeys:
        """The account's keys record, made on first use and kept (the margin ledger passes
        its own records to ``set``/``set_one`` instead)."""
        account, asset = who
        keys = self.keys.get(asset)
        if keys is None:
            keys = self.keys[asset] = {}
        ak = keys.get(account)
        if ak is None:
            ak = keys[account] = AccountKeys()
        return ak

    def _adopt(self, who: Key, ak: AccountKeys) -> None:
        """Index a record the caller made, on its first re-key (``version`` 0)."""
        account, asset = who
        keys = self.keys.get(asset)
        if keys is None:
            keys = self.keys[asset] = {}
        keys[account] = ak

    def _find(self, who: Key) -> AccountKeys | None:
        keys = self.keys.get(who[1])
        return keys.get(who[0]) if keys is not None else None

    @property
    def version(self) -> dict[str, dict[int, int]]:
        """Settle asset -> account -> how often it was re-keyed (never: absent)."""
        return {asset: {account: ak.version for account, ak in keys.items() if ak.version}
                for asset, keys in self.keys.items()}

    def set(self, who: Key, entries: dict[str, Entry], ak: AccountKeys | None = None) -> None:
        """Replace an account's entries (all its markets at once); ``ak``: its keys record,
        if the caller has it."""
        if ak is None:
            ak = self.account_keys(who)
        elif not ak.version:
            self._adopt(who, ak)
        ak.version += 1
        account = who[0]
        for market, (is_long, key, fkey, soft) in entries.items():
            self._put(market, account, ak, is_long, key, fkey, soft)
        if ak.count() != len(entries):
            live = self.live
            for market in [m for m in ak.slots() if m not in entries]:
                ak.drop(market)
                live[market] -= 1

    def set_one(self, who: Key, market: str, is_long: bool, key: int, fkey: int,
                soft: int, ak: AccountKeys | None = None) -> None:
        """``set(who, {market: (is_long, key, fkey, soft)}, ak)`` without building the entry:
        an account with one position, the usual case, re-keyed after every fill."""
        if ak is None:
            ak = self.account_keys(who)
        more = ak.more
        if more is None or not more:
            own = ak.market
            if own == market and ak.is_long == is_long:
                ak.version += 1  # the usual re-key: its one slot, kept
                self._update(market, who[0], ak, key, fkey, soft)
                return
            if not own:  # no slot yet
                if not ak.version:
                    self._adopt(who, ak)
                ak.version += 1
                self._put(market, who[0], ak, is_long, key, fkey, soft)
                return
        self.set(who, {market: (is_long, key, fkey, soft)}, ak)

    def _put(self, market: str, account: int, ak: AccountKeys, is_long: bool, key: int,
             fkey: int, soft: int) -> None:
        """Set one market's keys, pushing heap entries only where the old ones do not guard."""
        slot = ak.slot(market)
        if slot is None or slot.is_long != is_long:
            if slot is None:
                live = self.live
                live[market] = live.get(market, 0) + 1
                slot = ak.add(market)
            _reset(slot, is_long, key, fkey, soft)
            self._push_price(market, account, slot)
            self._push_funding(market, account, slot)
            return
        self._update(market, account, slot, key, fkey, soft)

    def _update(self, market: str, account: int, slot: Slot, key: int, fkey: int,
                soft: int) -> None:
        """New keys for a slot on the same side: push heap entries only where the old ones
        do not guard."""
        is_long = slot.is_long
        slot.key = key
        slot.fkey = fkey
        slot.soft = soft
        # a heap key further from the mark than the new key still guards it: keep it
        if slot.stamp == NONE or (slot.heap_key < key if is_long else slot.heap_key > key):
            slot.heap_key = key
            self._push_price(market, account, slot)
        if slot.fstamp == NONE or (slot.heap_fkey > fkey if is_long else slot.heap_fkey < fkey):
            slot.heap_fkey = fkey
            self._push_funding(market, account, slot)

    def _push_price(self, market: str, account: int, slot: Slot) -> None:
        stamp = self.stamps = self.stamps + 1
        slot.stamp = stamp
        if slot.is_long:
            heaps = self.longs
            item = Item(-slot.heap_key, account, stamp)
        else:
            heaps = self.shorts
            item = Item(slot.heap_key, account, stamp)
        heap = heaps.get(market)
        if heap is None:
            heap = heaps[market] = []
        push(heap, item)

    def _push_funding(self, market: str, account: int, slot: Slot) -> None:
        stamp = self.stamps = self.stamps + 1
        slot.fstamp = stamp
        if slot.is_long:
            heaps = self.fund_longs
            item = Item(slot.heap_fkey, account, stamp)
        else:
            heaps = self.fund_shorts
            item = Item(-slot.heap_fkey, account, stamp)
        heap = heaps.get(market)
        if heap is None:
            heap = heaps[market] = []
        push(heap, item)

    def version_of(self, who: Key) -> int:
        """How often the account was re-keyed (0: never)."""
        ak = self._find(who)
        return ak.version if ak is not None else 0

    def entry(self, who: Key, market: str) -> Entry | None:
        """The account's live entry in ``market``, if keyed there."""
        ak = self._find(who)
        slot = ak.slot(market) if ak is not None else None
        if slot is None:
            return None
        return (slot.is_long, slot.key, slot.fkey, slot.soft)

    def forget(self, who: Key) -> None:
        ak = self._find(who)
        if ak is not None and ak.market:
            self.set(who, {}, ak)

    def crossed(self, market: str, asset: str, mark: int) -> list[int]:
        """Pop every live entry of ``market`` the mark has crossed; the caller must re-key the
        accounts returned (sorted, deduplicated)."""
        found: Accounts = set()
        keys = self.keys.get(asset, {})
        heap = self.longs.get(market)
        while heap and heap[0].key <= -mark:
            top = pop(heap)
            account, stamp = top.account, top.stamp
            ak = keys.get(account)
            slot = ak.slot(market) if ak is not None else None
            if slot is None or slot.stamp != stamp:
                continue
            if slot.key >= mark:
                slot.stamp = NONE
                found.add(account)
            else:  # a conservative heap key: put the true one in
                slot.heap_key = slot.key
                self._push_price(market, account, slot)
        heap = self.shorts.get(market)
        while heap and heap[0].key <= mark:
            top = pop(heap)
            account, stamp = top.account, top.stamp
            ak = keys.get(account)
            slot = ak.slot(market) if ak is not None else None
            if slot is None or slot.stamp != stamp:
                continue
            if slot.key <= mark:
                slot.stamp = NONE
                found.add(account)
            else:
                slot.heap_key = slot.key
                self._push_price(market, account, slot)
        return sorted(found)

    def crossed_funding(self, market: str, asset: str, index: int) -> list[int]:
        """Pop every live entry of ``market`` whose funding allowance ``index`` has used up."""
        found: Accounts = set()
        keys = self.keys.get(asset, {})
        heap = self.fund_longs.get(market)
        while heap and heap[0].key <= index:
            top = pop(heap)
            account, stamp = top.account, top.stamp
            ak = keys.get(account)
            slot = ak.slot(market) if ak is not None else None
            if slot is None or slot.fstamp != stamp:
                continue
            if slot.fkey <= index:
                slot.fstamp = NONE
                found.add(account)
            else:
                slot.heap_fkey = slot.fkey
                self._push_funding(market, account, slot)
        heap = self.fund_shorts.get(market)
        while heap and heap[0].key <= -index:
            top = pop(heap)
            account, stamp = top.account, top.stamp
            ak = keys.get(account)
            slot = ak.slot(market) if ak is not None else None
            if slot is None or slot.fstamp != stamp:
                continue
            if slot.fkey >= index:
                slot.fstamp = NONE
                found.add(account)
            else:
                slot.heap_fkey = slot.fkey
                self._push_funding(market, account, slot)
        return sorted(found)

    def drain_funding(self, market: str, asset: str, index: int, limit: int
                      ) -> tuple[list[int], bool]:
        """Pop, from the tops of ``market``'s funding heaps, garbage and up to ``limit`` live
        entries whose soft key ``index`` has crossed (the caller re-checks those accounts).
        Returns them and whether the budget ran out before the tops were clean."""
        found: list[int] = []
        keys = self.keys.get(asset, {})
        pops = 0
        for heap, sign in ((self.fund_longs.get(market), 1), (self.fund_shorts.get(market), -1)):
            while heap:
                if len(found) >= limit or pops >= 4 * limit:
                    return found, True
                account, stamp = heap[0].account, heap[0].stamp
                ak = keys.get(account)
                slot = ak.slot(market) if ak is not None else None
                if slot is not None and slot.fstamp == stamp:
                    if slot.heap_fkey != slot.fkey:  # conservative: put the true key in
                        pop(heap)
                        pops += 1
                        slot.heap_fkey = slot.fkey
                        self._push_funding(market, account, slot)
                        continue
                    if sign * slot.soft > sign * index:
                        break
                    slot.fstamp = NONE
                    found.append(account)
                pop(heap)
                pops += 1
        return found, False

    def funding_pending(self, market: str, asset: str, index: int) -> bool:
        """Whether ``drain_funding`` has work in ``market`` at ``index``."""
        keys = self.keys.get(asset, {})
        for heap, sign in ((self.fund_longs.get(market), 1), (self.fund_shorts.get(market), -1)):
            if heap:
                account, stamp = heap[0].account, heap[0].stamp
                ak = keys.get(account)
                slot = ak.slot(market) if ak is not None else None
                if (slot is None or slot.fstamp != stamp or slot.heap_fkey != slot.fkey
                        or slot.soft * sign <= sign * index):
                    return True
        return False

    def compact(self, market: str, asset: str) -> None:
        """Rebuild one market's heaps from its slots once garbage is ``GARBAGE`` times the live
        entries: amortised O(1) per re-key (a rebuild costs about as much as ``live`` re-keys,
        and comes every ``GARBAGE * live``). Every slot of the market gets a fresh entry, also
        one whose position closed since its last re-key: a slot must never point at an entry
        the rebuild dropped, or a re-key that keeps it would leave the account unguarded."""
        total = len(self.longs.get(market, ())) + len(self.shorts.get(market, ()))
        if total < (GARBAGE + 1) * self.live.get(market, 0) + REBUILD_FLOOR:
            return
        heaps: tuple[Heap, Heap, Heap, Heap] = ([], [], [], [])
        stamp = self.stamps
        for account, ak in self.keys.get(asset, {}).items():
            slot = ak.slot(market)
            if slot is None:
                continue
            key = slot.heap_key = slot.key
            fkey = slot.heap_fkey = slot.fkey
            slot.stamp = stamp + 1
            slot.fstamp = stamp = stamp + 2
            if slot.is_long:
                heaps[0].append(Item(-key, account, slot.stamp))
                heaps[2].append(Item(fkey, account, stamp))
            else:
                heaps[1].append(Item(key, account, slot.stamp))
                heaps[3].append(Item(-fkey, account, stamp))
        self.stamps = stamp
        for heap in heaps:
            heapify(heap)
        self.longs[market], self.shorts[market] = heaps[0], heaps[1]
        self.fund_longs[market], self.fund_shorts[market] = heaps[2], heaps[3]

    def size(self, market: str) -> int:
        """Price-heap entries of ``market``, garbage included."""
        return len(self.longs.get(market, ())) + len(self.shorts.get(market, ()))
