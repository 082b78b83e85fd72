"""The Binance parameter parser's plain-split path reads exactly what ``parse_qsl`` reads."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.api.binance.rest import MAX_FIELDS, BinanceError, _strip_signature, parse_params

_text = st.text(st.characters(codec="utf-8", exclude_characters="&=%+"), max_size=12)
#: a value may hold ``=`` (``a=b=c`` is ``a`` -> ``b=c``, as ``parse_qsl`` reads it)
_value = st.text(st.characters(codec="utf-8", exclude_characters="&%+"), max_size=12)


@settings(max_examples=300, deadline=None)
@given(pairs=st.lists(st.tuples(_text, st.one_of(st.none(), _value)), max_size=12),
       body_pairs=st.lists(st.tuples(_text, _value), max_size=4))
def test_plain_split_matches_parse_qsl(pairs: list[tuple[str, str | None]],
                                       body_pairs: list[tuple[str, str]]) -> None:
    qs = "&".join(k if v is None else f"{k}={v}" for k, v in pairs)
    body = "&".join(f"{k}={v}" for k, v in body_pairs)
    want: dict[str, str] = {}
    for raw in (qs, body):
        want.update(parse_qsl(raw, keep_blank_values=True))
    assert parse_params(qs.encode(), body.encode()).items == want


#: what could make the one-pass (JSON) reading differ: JSON's own syntax and escapes, control
#: characters, non-ASCII digits, percent-escapes and the form's separators
_tricky = st.lists(st.sampled_from(['&', '=', 'a', '1', '\u0661', '\u00e9', '"', '\\', '\\\\',
                                    '\\u0041', '\\"', '","', '":"', ':', ',', '{', '}', ' ',
                                    '\t', '\x00', '%41', '%', '+']),
                   max_size=16).map("".join)


@settings(max_examples=400, deadline=None)
@given(qs=_tricky, body=_tricky)
def test_any_form_reads_as_parse_qsl(qs: str, body: str) -> None:
    want: dict[str, str] = {}
    for raw in (qs, body):
        want.update(parse_qsl(raw, keep_blank_values=True))
    assert parse_params(qs.encode(), body.encode()).items == want


def test_escapes_and_field_cap() -> None:
    assert parse_params(b"a=1%202&b=x+y", b"").items == {"a": "1 2", "b": "x y"}
    # nothing a value holds can add a field or be unescaped
    assert parse_params(b"", b'a=x","signature":"0&b=\\u0041').items == {
        "a": 'x","signature":"0', "b": "\\u0041"}
    assert parse_params(b"a=1&b=2", b"a=3&a=4").items == {"a": "4", "b": "2"}
    fields = b"&".join(b"k%d=1" % i for i in range(MAX_FIELDS))
    assert len(parse_params(b"", fields).items) == MAX_FIELDS
    with pytest.raises(BinanceError):
        parse_params(b"", fields + b"&k=1")
    with pytest.raises(BinanceError):
        parse_params(b"&".join(b"k%d=1" % i for i in range(MAX_FIELDS + 1)), b"")
    with pytest.raises(BinanceError):
        parse_params(b"a=\xff", b"")


def _split_reference(raw: bytes) -> tuple[bytes, str | None]:
    """Every ``signature=`` field dropped, the last one's value kept (what is signed)."""
    kept = [p for p in raw.split(b"&") if not p.startswith(b"signature=")] if raw else []
    sigs = [p[10:].decode("ascii", "replace") for p in raw.split(b"&")
            if p.startswith(b"signature=")]
    return b"&".join(kept), (sigs[-1] if sigs else None)


_field = st.sampled_from([b"a=1", b"", b"b=", b"signature=ab12", b"signature=", b"xsignature=q",
                          b"c=signature=", b"signature", b"d=\xff"])


@settings(max_examples=400, deadline=None)
@given(fields=st.lists(_field, max_size=6))
def test_signature_split_matches_reference(fields: list[bytes]) -> None:
    """The one-search path (a single ``signature`` as the last field, what clients send) and
    the general path give the bytes the signature covers exactly."""
    raw = b"&".join(fields)
    assert _strip_signature(raw) == _split_reference(raw)
