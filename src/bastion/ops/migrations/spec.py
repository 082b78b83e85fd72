"""The migration file: a declarative, versioned TOML document of metadata changes.

Parsing is strict (unknown fields, wrong types and missing choices are errors naming the field,
e.g. ``changes[2].tick_size``) because a migration that means something other than what its
author wrote is the OKX 2023 failure. Every change that can leave resting orders that no longer
fit says what to do with them (``on_conflict``); there is no default.
"""

from __future__ import annotations

import hashlib
import tomllib
from datetime import date, datetime, time
from pathlib import Path

import msgspec

from bastion.core import commands as C
from bastion.core.migration_spec import AnyChange
from bastion.core.migrations import check_shape
from bastion.core.rules import Refused

FORMAT_VERSION = 1


class MigrationError(Exception):
    """A migration file or change is refused; ``field`` names where (``changes[1].tick_size``)."""

    def __init__(self, field: str, message: str, code: str = "MIGRATION_INVALID") -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message
        self.code = code


class Migration(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    format: int
    id: str
    description: str
    author: str
    changes: list[AnyChange]
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
    """Everything that needs no live state (the core's own check, so the file and the
    journaled command are judged by one rule)."""
    if mig.format != FORMAT_VERSION:
        raise MigrationError("format", f"unsupported format {mig.format}; this Bastion reads "
                                       f"format {FORMAT_VERSION}")
    try:
        check_shape(to_command(mig))
    except Refused as r:
        field, _, message = r.message.partition(": ")
        raise MigrationError(field, message) from None


def to_command(mig: Migration) -> C.ApplyMigration:
    """The one journaled command that applies the migration."""
    return C.ApplyMigration(migration_id=mig.id, digest=mig.digest,
                            description=mig.description, author=mig.author,
                            changes=list(mig.changes))
