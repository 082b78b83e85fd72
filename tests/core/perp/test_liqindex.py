"""The liquidation index against a plain model: after any history of re-keys (keys moving
either way, so heap entries get kept as conservative stand-ins), positions closing without a
re-key, heap rebuilds and funding ticks, a mark update returns exactly the accounts whose true
key it crossed, and a funding tick exactly those whose hard funding key it crossed."""

import random

from bastion.core.perp import liqindex
from bastion.core.perp.liqindex import LiqIndex

M, A = "M", "USDT"


def _entry(rng: random.Random) -> tuple[bool, int, int, int]:
    is_long = rng.random() < 0.5
    key = rng.randrange(900, 1_100)
    fkey = rng.randrange(-50, 50) + (100 if is_long else -100)
    return is_long, key, fkey, fkey // 2


def _crossed(model: dict[int, tuple[bool, int, int, int]], mark: int) -> list[int]:
    return sorted(a for a, (is_long, key, _, _) in model.items()
                  if (key >= mark if is_long else key <= mark))


def _funding_crossed(model: dict[int, tuple[bool, int, int, int]], index: int) -> list[int]:
    return sorted(a for a, (is_long, _, fkey, _) in model.items()
                  if (fkey <= index if is_long else fkey >= index))


def test_index_matches_the_model_through_rekeys_rebuilds_and_stale_slots(monkeypatch):
    monkeypatch.setattr(liqindex, "GARBAGE", 1)
    monkeypatch.setattr(liqindex, "REBUILD_FLOOR", 64)
    for seed in range(3):
        rng = random.Random(seed)
        liq = LiqIndex()
        model: dict[int, tuple[bool, int, int, int]] = {}
        rebuilt = False
        for step in range(5_000):
            account = rng.randrange(1, 300)
            roll = rng.random()
            if roll < 0.8:
                entry = _entry(rng)
                liq.set((account, A), {M: entry})
                model[account] = entry
            elif roll < 0.85:
                liq.forget((account, A))
                model.pop(account, None)
            elif roll < 0.9:
                # the account's position closed, not re-keyed yet: the index still guards
                # its last keys, and a rebuild now must keep guarding them
                before = liq.size(M)
                liq.compact(M, A)
                rebuilt |= liq.size(M) < before
            elif roll < 0.97:
                mark = rng.randrange(880, 1_120)
                found = liq.crossed(M, A, mark)
                assert found == _crossed(model, mark), (seed, step)
                for a in found:  # the caller re-keys what it was given
                    entry = _entry(rng)
                    liq.set((a, A), {M: entry})
                    model[a] = entry
            else:
                index = rng.randrange(-160, 160)
                found = liq.crossed_funding(M, A, index)
                assert found == _funding_crossed(model, index), (seed, step)
                for a in found:
                    entry = _entry(rng)
                    liq.set((a, A), {M: entry})
                    model[a] = entry
        assert rebuilt


def test_set_one_is_set_with_one_entry():
    """``set_one`` (the one-position re-key) leaves the index as ``set`` with that one entry
    would, also for an account that held a second market until now, and counts re-keys the
    same: two indexes fed the same history agree on every crossing, entry and count, and
    every crossing is the model's (an account's slots move between its own record and
    ``more`` as markets come and go)."""
    markets = ("M", "N")
    for seed in range(3):
        rng = random.Random(seed)
        fast, plain = LiqIndex(), LiqIndex()
        model: dict[int, dict[str, tuple[bool, int, int, int]]] = {}
        for step in range(3_000):
            who = (rng.randrange(1, 100), A)
            roll = rng.random()
            if roll < 0.6:
                market = rng.choice(markets)
                entry = _entry(rng)
                fast.set_one(who, market, *entry)
                plain.set(who, {market: entry})
                model[who[0]] = {market: entry}
            elif roll < 0.75:
                entries = {m: _entry(rng) for m in rng.sample(markets, 2)}
                fast.set(who, entries)
                plain.set(who, entries)
                model[who[0]] = dict(entries)
            elif roll < 0.8:
                fast.forget(who)
                plain.forget(who)
                model.pop(who[0], None)
            else:
                market = rng.choice(markets)
                mark = rng.randrange(880, 1_120)
                found = fast.crossed(market, A, mark)
                assert found == plain.crossed(market, A, mark), (seed, step)
                assert found == _crossed({a: e[market] for a, e in model.items()
                                          if market in e}, mark), (seed, step)
                for a in found:
                    entry = _entry(rng)
                    fast.set_one((a, A), market, *entry)
                    plain.set((a, A), {market: entry})
                    model[a] = {market: entry}
            for market in markets:
                assert fast.entry(who, market) == plain.entry(who, market), (seed, step)
            for index in (fast, plain):  # the record's own slot is taken while any is
                ak = index.account_keys(who)
                slots = ak.slots()
                assert ak.count() == len(slots), (seed, step)
                assert bool(ak.market) == bool(slots), (seed, step)
                assert not ak.market or slots[ak.market] is ak, (seed, step)
                assert ak not in (ak.more or {}).values(), (seed, step)
        assert fast.version == plain.version
        assert fast.live == plain.live
