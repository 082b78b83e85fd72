"""One error type for the whole gateway: an HTTP status, a stable code and a message.

Codes are the core's reject codes (``bastion.core.errors``) where the core decided, plus a few
gateway codes (auth, limits, malformed input). Clients branch on ``code``, never on ``message``.
"""

from __future__ import annotations

from typing import Final

from bastion.core import errors as X

# gateway-level codes (the core never emits these)
UNAUTHORIZED: Final = "UNAUTHORIZED"
INVALID_SIGNATURE: Final = "INVALID_SIGNATURE"
TIMESTAMP_OUTSIDE_WINDOW: Final = "TIMESTAMP_OUTSIDE_WINDOW"
REPLAYED: Final = "REPLAYED"
FORBIDDEN: Final = "FORBIDDEN"
RATE_LIMITED: Final = "RATE_LIMITED"
BODY_TOO_LARGE: Final = "BODY_TOO_LARGE"
MALFORMED_REQUEST: Final = "MALFORMED_REQUEST"
NOT_FOUND: Final = "NOT_FOUND"
METHOD_NOT_ALLOWED: Final = "METHOD_NOT_ALLOWED"
UNAVAILABLE: Final = "UNAVAILABLE"
NOT_SUPPORTED: Final = "NOT_SUPPORTED"
TOO_MANY_SUBSCRIPTIONS: Final = "TOO_MANY_SUBSCRIPTIONS"

_STATUS: dict[str, int] = {
    UNAUTHORIZED: 401,
    INVALID_SIGNATURE: 401,
    TIMESTAMP_OUTSIDE_WINDOW: 401,
    REPLAYED: 401,
    FORBIDDEN: 403,
    RATE_LIMITED: 429,
    BODY_TOO_LARGE: 413,
    MALFORMED_REQUEST: 400,
    NOT_FOUND: 404,
    METHOD_NOT_ALLOWED: 405,
    UNAVAILABLE: 503,
    NOT_SUPPORTED: 400,
    TOO_MANY_SUBSCRIPTIONS: 400,
    X.UNKNOWN_ORDER: 404,
    X.UNKNOWN_MARKET: 404,
    X.UNKNOWN_ASSET: 404,
    X.UNKNOWN_ACCOUNT: 404,
    X.DUPLICATE_CLIENT_ID: 409,
    X.MARKET_EXISTS: 409,
    X.ASSET_EXISTS: 409,
    X.NO_CHANGE: 409,
    X.MARKET_MODE: 409,
    X.SEQUENCE: 503,
    X.GUARD: 503,
    X.INTERNAL_ERROR: 500,
    X.NO_MARK_PRICE: 409,
    X.ORACLE_STALE: 409,
    X.WITHDRAWALS_PAUSED: 409,
    X.WITHDRAWAL_STATE: 409,
    X.UNKNOWN_WITHDRAWAL: 404,
}


def status_for(code: str) -> int:
    """HTTP status for a code; every core business reject not listed is a plain 400."""
    return _STATUS.get(code, 400)


class ApiError(Exception):
    """Raised anywhere in the gateway; the app turns it into ``{"code", "message"}``.

    ``field``/``limit``/``value`` are the typed detail (the core's ``Rejected`` fields, or the
    edge's own: ``field="decimals"`` for a number with too many decimal places, ``field="key"``
    for a missing API key). Surfaces map ``(code, field)`` through their tables; nobody parses
    ``message``. Native bodies carry the detail in decimal units (``error_body``)."""

    def __init__(self, code: str, message: str, status: int | None = None,
                 headers: dict[str, str] | None = None, *, field: str = "", limit: int = 0,
                 value: int = 0, limit_text: str = "", value_text: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status if status is not None else status_for(code)
        self.headers = headers or {}
        self.field = field
        self.limit = limit
        self.value = value
        #: ``limit``/``value`` in the request's decimal units (empty where there is no unit)
        self.limit_text = limit_text
        self.value_text = value_text

    def detail(self) -> dict[str, str]:
        """The typed detail as a native error body shows it (``schemas.Error``): the field,
        and its limit and value where they have a decimal unit."""
        if not self.field:
            return {}
        out = {"field": self.field}
        if self.limit_text:
            out["limit"] = self.limit_text
        if self.value_text:
            out["value"] = self.value_text
        return out
