"""The one strict integer parser for text from outside (query strings, headers, paths, form
fields, WebSocket ops, environment).

``str.isdigit`` accepts '²' and Arabic-Indic digits, ``int`` accepts '٣', '+5', ' 5', '5_0',
and neither bounds the length: every edge goes through ``ascii_int`` instead, so a crafted
number is refused with the caller's stable error code, never a 500 or a surprising value.
"""

from __future__ import annotations

_DIGITS = frozenset(b"0123456789")

#: longest accepted digit string: every integer the API takes fits in 19 digits (int64)
MAX_DIGITS = 19


def ascii_int(text: object, *, signed: bool = False, max_digits: int = MAX_DIGITS) -> int | None:
    """The value of ``text`` if it is ``[-]?[0-9]{1,max_digits}`` in ASCII (the sign only when
    ``signed``), else None. No '+', spaces, underscores, or non-ASCII digits."""
    if isinstance(text, bytes):
        raw = text
    elif isinstance(text, str):
        if not text.isascii():
            return None
        raw = text.encode("ascii")
    else:
        return None
    digits = raw[1:] if signed and raw[:1] == b"-" else raw
    if not 0 < len(digits) <= max_digits or not _DIGITS.issuperset(digits):
        return None
    return int(raw)
