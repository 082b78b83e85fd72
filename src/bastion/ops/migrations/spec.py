"""The migration file: a declarative, versioned TOML document of metadata changes.

Parsing is strict (unknown fields, wrong types and missing choices are errors naming the field,
e.g. ``changes[2].tick_size``) because a migration that means something other than what its
author wrote is the OKX 2023 failure. Every change that can leave resting orders that no longer
fit says what to do with them (``on_conflict``); there is no default.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from datetime import date, datetime, time
from pathlib import Path
from typing import Literal

import msgspec

FORMAT_VERSION = 1
MAX_CHANGES = 256
MAX_TIME_MS = 2**53
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

OnConflict = Literal["cancel", "refuse-migration"]
#: modes a schedule may set; ``closed`` is a delisting, which has its own change.
ScheduledMode = Literal["post_only", "cancel_only", "halted"]


class MigrationError(Exception):
    """A migration file or change is refused; ``field`` names where (``changes[1].tick_size``)."""

    def __init__(self, field: str, message: str, code: str = "MIGRATION_INVALID") -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message
        self.code = code


class _Change(msgspec.Struct, tag_field="kind", kw_only=True, forbid_unknown_fields=True):
    pass


class NewAsset(_Change, tag="new_asset"):
    asset: str
    decimals: int


class NewMarket(_Change, tag="new_market"):
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


class TickChange(_Change, tag="tick"):
    market: str
    tick_size: int
    #: resting orders whose price is off the new grid
    on_conflict: OnConflict


class LotChange(_Change, tag="lot"):
    market: str
    lot_size: int
    #: resting orders whose quantity is off the new grid
    on_conflict: OnConflict
    #: min/max must stay multiples of the lot; give them when the old ones are not
    min_qty: int | None = None
    max_qty: int | None = None


class FeeChange(_Change, tag="fees"):
    """New rates now (or from ``start``); with ``end`` it is a fee holiday: the rates in force
    before it come back at ``end`` by themselves. Times are ms since the epoch (the file may
    give TOML date-times with a zone; they are converted on load)."""

    market: str
    maker_fee_ppm: int
    taker_fee_ppm: int
    start: int | None = None
    end: int | None = None


class LimitsChange(_Change, tag="limits"):
    """Order size limits and price bands; ``None`` leaves a limit as it is."""

    market: str
    #: resting orders whose size or notional is outside the new limits
    on_conflict: OnConflict
    min_qty: int | None = None
    max_qty: int | None = None
    min_notional: int | None = None
    market_band_bps: int | None = None
    ref_band_bps: int | None = None


class ModeSchedule(_Change, tag="mode"):
    """``mode`` from ``start`` to ``end``; at ``end`` the market returns to the mode it had."""

    market: str
    mode: ScheduledMode
    start: int
    end: int
    reason: str


class Delist(_Change, tag="delist"):
    """Close the market; it accepts nothing afterwards."""

    market: str
    reason: str
    #: resting orders in the market
    on_conflict: OnConflict


Change = NewAsset | NewMarket | TickChange | LotChange | FeeChange | LimitsChange | ModeSchedule \
    | Delist


class Migration(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    format: int
    id: str
    description: str
    author: str
    changes: list[Change]
    #: BLAKE2b of the file's bytes: the journaled record names exactly what was applied.
    digest: str = ""


def _field(path: str) -> str:
    """``$.changes[1].tick_size`` (msgspec) -> ``changes[1].tick_size``."""
    return path[2:] if path.startswith("$.") else path.lstrip("$")


def _times_to_ms(node: object, path: str) -> object:
    """TOML date-times -> integer ms (the core's clock unit); a time without a zone is refused,
    since it would mean a different instant on every operator's machine."""
    if isinstance(node, dict):
        return {k: _times_to_ms(v, f"{path}.{k}" if path else k) for k, v in node.items()}
    if isinstance(node, list):
        return [_times_to_ms(v, f"{path}[{i}]") for i, v in enumerate(node)]
    if isinstance(node, datetime):
        if node.tzinfo is None:
            raise MigrationError(path, "give a time zone (e.g. 2026-12-01T00:00:00Z)")
        return int(node.timestamp() * 1000)
    if isinstance(node, date | time):
        raise MigrationError(path, "give a full date-time with a zone (e.g. "
                                   "2026-12-01T00:00:00Z)")
    return node


def parse_migration(raw: bytes, source: str = "migration") -> Migration:
    """Parse and check a migration file's shape; raise ``MigrationError`` naming the field."""
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise MigrationError("", f"{source} is not UTF-8 text ({exc.reason})",
                             code="MIGRATION_SYNTAX") from exc
    except tomllib.TOMLDecodeError as exc:
        raise MigrationError("", f"{source} is not valid TOML: {exc}",
                             code="MIGRATION_SYNTAX") from exc
    if "digest" in doc:
        raise MigrationError("digest", "is computed from the file, do not set it")
    try:
        mig = msgspec.convert(_times_to_ms(doc, ""), Migration, strict=True)
    except msgspec.ValidationError as exc:
        text = str(exc)
        field = ""
        if " - at `" in text:
            text, _, where = text.rpartition(" - at `")
            field = _field(where.rstrip("`"))
        if text.startswith("Object contains unknown field"):
            name = text.split("`")[1]
            field = f"{field}.{name}" if field else name
            text = "unknown field"
        elif text.startswith("Object missing required field"):
            name = text.split("`")[1]
            field = f"{field}.{name}" if field else name
            text = "required field is missing"
        raise MigrationError(field, text) from exc
    _check_shape(mig)
    mig.digest = hashlib.blake2b(raw, digest_size=16).hexdigest()
    return mig


def load_migration(path: str | Path) -> Migration:
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise MigrationError("", f"cannot read {p}: {exc.strerror}", code="MIGRATION_IO") from exc
    return parse_migration(raw, source=str(p))


def _check_shape(mig: Migration) -> None:
    """What can be checked without live state: ids, versions, times, duplicate changes."""
    if mig.format != FORMAT_VERSION:
        raise MigrationError("format", f"unsupported format {mig.format}; this Bastion reads "
                                       f"format {FORMAT_VERSION}")
    if not ID_PATTERN.match(mig.id):
        raise MigrationError("id", "1-64 letters, digits, '.', '_' or '-', starting with a "
                                   "letter or digit")
    for name in ("description", "author"):
        if not getattr(mig, name).strip():
            raise MigrationError(name, "must not be empty")
    if not 1 <= len(mig.changes) <= MAX_CHANGES:
        raise MigrationError("changes", f"give 1..{MAX_CHANGES} changes")
    seen: dict[tuple[str, str], int] = {}
    for i, ch in enumerate(mig.changes):
        at = f"changes[{i}]"
        key = _subject(ch)
        if key in seen:
            raise MigrationError(at, f"changes the same thing as changes[{seen[key]}] "
                                     f"({key[0]} {key[1]}); merge them")
        seen[key] = i
        if isinstance(ch, FeeChange | ModeSchedule):
            for name in ("start", "end"):
                value = getattr(ch, name)
                if value is not None and not 0 <= value <= MAX_TIME_MS:
                    raise MigrationError(f"{at}.{name}", "time out of range")
            if ch.start is not None and ch.end is not None and ch.end <= ch.start:
                raise MigrationError(f"{at}.end", "must be after start")
        if isinstance(ch, ModeSchedule | Delist) and not ch.reason.strip():
            raise MigrationError(f"{at}.reason", "must not be empty")
    _check_windows(mig.changes)


def _check_windows(changes: list[Change]) -> None:
    """Two mode windows of one market may not overlap: which mode would hold is ambiguous."""
    windows: dict[str, list[tuple[int, int, int]]] = {}
    for i, ch in enumerate(changes):
        if isinstance(ch, ModeSchedule):
            windows.setdefault(ch.market, []).append((ch.start, ch.end, i))
    for spans in windows.values():
        spans.sort()
        for (_, end, i), (start, _, j) in zip(spans, spans[1:], strict=False):
            if start < end:
                raise MigrationError(f"changes[{j}].start", f"overlaps the window of "
                                                            f"changes[{i}] on the same market")


def _subject(ch: Change) -> tuple[str, str]:
    if isinstance(ch, NewAsset):
        return ("asset", ch.asset)
    if isinstance(ch, ModeSchedule):
        # several windows per market are allowed; overlap is checked against the timeline
        return (f"mode@{ch.start}", ch.market)
    kind = type(ch).__struct_config__.tag
    return (str(kind), ch.market)
