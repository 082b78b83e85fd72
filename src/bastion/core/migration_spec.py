"""The changes a metadata migration is made of: one tagged struct per kind of change.

A leaf module (commands, state and the migration file parser all use these), so the journaled
``ApplyMigration`` command carries exactly the changes the operator's file declared. Decoding
is strict (unknown fields are errors): a change that means something other than what its
author wrote is the OKX 2023 failure. Integers are in the core's units; times are ms.
"""

from typing import Literal

import msgspec

#: what to do with resting orders that no longer fit: no default, the author chooses
OnConflict = Literal["cancel", "refuse-migration"]
#: modes a schedule may set; ``closed`` is a delisting, which has its own change
ScheduledMode = Literal["post_only", "cancel_only", "halted"]


class MigrationChange(msgspec.Struct, tag_field="kind", kw_only=True, forbid_unknown_fields=True):
    pass


class NewAsset(MigrationChange, tag="new_asset"):
    asset: str
    decimals: int


class NewMarket(MigrationChange, tag="new_market"):
    """A spot market; units as in ``CreateMarket`` (integers in the smallest units)."""

    market: str
    base: str
    quote: str
    price_decimals: int
    tick_size: int
    lot_size: int
    min_qty: int
    max_qty: int
    min_notional: int = 0
    maker_fee_ppm: int = 0
    taker_fee_ppm: int = 0
    market_band_bps: int = 500
    ref_band_bps: int = 5


class TickChange(MigrationChange, tag="tick"):
    market: str
    tick_size: int
    #: resting orders whose price is off the new grid
    on_conflict: OnConflict


class LotChange(MigrationChange, tag="lot"):
    market: str
    lot_size: int
    #: resting orders whose quantity is off the new grid
    on_conflict: OnConflict
    #: min/max must stay multiples of the lot; give them when the old ones are not
    min_qty: int | None = None
    max_qty: int | None = None


class FeeChange(MigrationChange, tag="fees"):
    """New rates now (or from ``start``); with ``end`` it is a fee holiday: the rates in force
    before it come back at ``end`` by themselves. Times are ms since the epoch (the file may
    give TOML date-times with a zone; they are converted on load)."""

    market: str
    maker_fee_ppm: int
    taker_fee_ppm: int
    start: int | None = None
    end: int | None = None


class LimitsChange(MigrationChange, tag="limits"):
    """Order size limits and price bands; ``None`` leaves a limit as it is."""

    market: str
    #: resting orders whose size or notional is outside the new limits
    on_conflict: OnConflict
    min_qty: int | None = None
    max_qty: int | None = None
    min_notional: int | None = None
    market_band_bps: int | None = None
    ref_band_bps: int | None = None


class ModeSchedule(MigrationChange, tag="mode"):
    """``mode`` from ``start`` to ``end``; at ``end`` the market returns to the mode it had."""

    market: str
    mode: ScheduledMode
    start: int
    end: int
    reason: str


class Delist(MigrationChange, tag="delist"):
    """Close the market; it accepts nothing afterwards."""

    market: str
    reason: str
    #: resting orders in the market
    on_conflict: OnConflict


AnyChange = (NewAsset | NewMarket | TickChange | LotChange | FeeChange | LimitsChange
             | ModeSchedule | Delist)
