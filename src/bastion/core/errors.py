"""Stable, machine-readable reject codes: clients and the API edge map them, never the messages."""

from typing import Final

INSUFFICIENT_FUNDS: Final = "INSUFFICIENT_FUNDS"
POST_ONLY_WOULD_CROSS: Final = "POST_ONLY_WOULD_CROSS"
MARKET_MODE: Final = "MARKET_MODE"
TICK_SIZE: Final = "TICK_SIZE"
LOT_SIZE: Final = "LOT_SIZE"
MIN_QUANTITY: Final = "MIN_QUANTITY"
MAX_QUANTITY: Final = "MAX_QUANTITY"
MIN_NOTIONAL: Final = "MIN_NOTIONAL"
PRICE_BAND: Final = "PRICE_BAND"
NO_LIQUIDITY: Final = "NO_LIQUIDITY"
FOK_NOT_FILLABLE: Final = "FOK_NOT_FILLABLE"
UNKNOWN_ORDER: Final = "UNKNOWN_ORDER"
DUPLICATE_CLIENT_ID: Final = "DUPLICATE_CLIENT_ID"
UNKNOWN_MARKET: Final = "UNKNOWN_MARKET"
UNKNOWN_ASSET: Final = "UNKNOWN_ASSET"
UNKNOWN_ACCOUNT: Final = "UNKNOWN_ACCOUNT"
SELF_TRADE: Final = "SELF_TRADE"
INVALID_PRICE: Final = "INVALID_PRICE"
INVALID_QUANTITY: Final = "INVALID_QUANTITY"
INVALID_AMOUNT: Final = "INVALID_AMOUNT"
INVALID_ARGUMENT: Final = "INVALID_ARGUMENT"
MARKET_EXISTS: Final = "MARKET_EXISTS"
ASSET_EXISTS: Final = "ASSET_EXISTS"
INVALID_MARKET_SPEC: Final = "INVALID_MARKET_SPEC"
NO_CHANGE: Final = "NO_CHANGE"
SEQUENCE: Final = "SEQUENCE"
GUARD: Final = "GUARD"
INTERNAL_ERROR: Final = "INTERNAL_ERROR"

#: Upper bound for every integer a command may carry: keeps arithmetic far from int64 limits at
#: the edge and makes "huge integer" input a clean reject instead of a slow bignum path.
MAX_INT: Final = 2**62
