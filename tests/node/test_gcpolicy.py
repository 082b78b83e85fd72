"""Periodic full collections freeze what survives them; cycles still get reclaimed."""

from __future__ import annotations

import gc
import weakref

from bastion.node.gcpolicy import FullCollections


class _Cell:
    ref: object = None


def _cycle() -> tuple[_Cell, weakref.ref[_Cell]]:
    cell = _Cell()
    cell.ref = cell
    return cell, weakref.ref(cell)


def test_full_collections_freeze_survivors_and_the_sweep_reclaims_old_cycles() -> None:
    full = FullCollections(sweep_every=4)
    try:
        full.run()  # 1
        assert gc.get_freeze_count() > 0  # survivors are out of later walks

        young, young_ref = _cycle()
        del young
        full.run()  # 2: garbage made since the last one is still collected
        assert young_ref() is None

        old, old_ref = _cycle()
        full.run()  # 3 freezes it while alive
        del old
        gc.collect()
        assert old_ref() is not None  # a frozen cycle waits for the sweep...
        full.run()  # 4 = sweep_every: unfreeze, walk everything, freeze again
        assert old_ref() is None
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
