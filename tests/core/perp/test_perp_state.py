"""The perpetual market's snapshot form and its native record convert field for field."""

import msgspec

from bastion.core.perp.state import (
    PerpMarketState,
    TierState,
    perp_market_record,
    perp_market_state,
)


def test_every_perp_market_field_survives_record_and_back():
    # a distinct value per field, so a field dropped or swapped on the way shows
    values: dict[str, object] = {}
    for i, (name, kind) in enumerate(PerpMarketState.__annotations__.items()):
        values[name] = (f"v{i}" if kind is str else i % 2 == 0 if kind is bool
                        else [(i, i + 1)] if name in ("basis", "liq_window") else i + 1)
    values["tiers"] = [TierState(10**12, 20, 10_000, 0), TierState(2**62, 10, 50_000, 7)]
    state = PerpMarketState(**values)  # type: ignore[arg-type]
    again = perp_market_state(perp_market_record(state))
    assert msgspec.json.encode(again) == msgspec.json.encode(state)
