"""What "as it should have happened" means for a compensation run: a correction file.

```json
{"incident": "paradex-2026-01-19", "reason": "funding index reset to zero by a DB race",
 "drop":     [{"type": "FundingTick", "where": {"index": 0}}],
 "replace":  [{"seq": 812, "fields": {"index": 1234567}}],
 "override": [{"market": "BTC-USDT-PERP", "fields": {"guards": true}}]}
```

- ``drop``: commands to leave out (by ``seqs``, command ``type``, ``market``, ``account``, and
  ``where`` field equalities; every given criterion must match);
- ``replace``: new field values for a journaled command (e.g. the funding index or oracle
  sources it should have carried), by ``seq`` or by the same criteria as ``drop``;
- ``override``: market parameters in force for the whole window (applied to the replayed copy
  of the state at the window's start, never to the live state).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from bastion.core import commands as C
from bastion.journal.errors import DurabilityError

#: bounds so a hostile or mistaken file cannot make the replay walk unbounded work
MAX_RULES = 10_000


class Match(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    seqs: list[int] = []
    type: str = ""
    market: str = ""
    account: int | None = None
    where: dict[str, Any] = {}

    def matches(self, cmd: C.Command) -> bool:
        if self.seqs and cmd.seq not in self.seqs:
            return False
        if self.type and type(cmd).__name__ != self.type:
            return False
        if self.market and getattr(cmd, "market", None) != self.market:
            return False
        if self.account is not None and getattr(cmd, "account", None) != self.account:
            return False
        return all(_field(cmd, k) == v for k, v in self.where.items())

    def empty(self) -> bool:
        return not (self.seqs or self.type or self.market or self.account is not None
                    or self.where)


class Replace(Match, kw_only=True):
    seq: int = 0
    fields: dict[str, Any] = {}


class Override(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    market: str
    fields: dict[str, int | bool]


class Correction(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    incident: str
    reason: str
    drop: list[Match] = []
    replace: list[Replace] = []
    override: list[Override] = []

    def validate(self) -> Correction:
        if not self.incident.strip() or not self.reason.strip():
            raise DurabilityError("a correction needs an incident id and a reason",
                                  code="BAD_CORRECTION")
        if len(self.drop) + len(self.replace) + len(self.override) > MAX_RULES:
            raise DurabilityError(f"more than {MAX_RULES} rules", code="BAD_CORRECTION")
        for m in self.drop:
            if m.empty():
                raise DurabilityError("a drop rule with no criterion would drop everything",
                                      code="BAD_CORRECTION")
        for r in self.replace:
            if not r.fields or (not r.seq and r.empty()):
                raise DurabilityError("a replace rule needs fields and a seq or criteria",
                                      code="BAD_CORRECTION")
        return self

    def apply(self, cmd: C.Command) -> C.Command | None:
        """The command as it should have been (``None``: it should not have happened)."""
        if any(m.matches(cmd) for m in self.drop):
            return None
        for r in self.replace:
            if (r.seq and cmd.seq == r.seq) or (not r.seq and r.matches(cmd)):
                cmd = _replaced(cmd, r.fields)
        return cmd


def _field(cmd: C.Command, name: str) -> Any:
    return msgspec.to_builtins(getattr(cmd, name, None))


def _replaced(cmd: C.Command, fields: dict[str, Any]) -> C.Command:
    raw = msgspec.to_builtins(cmd)
    unknown = set(fields) - set(cmd.__struct_fields__)
    if unknown or {"seq", "ts", "type"} & set(fields):
        raise DurabilityError(f"cannot replace {sorted(unknown or fields)} of "
                              f"{type(cmd).__name__}", code="BAD_CORRECTION")
    raw.update(fields)
    try:
        out: C.Command = msgspec.convert(raw, C.AnyCommand)
    except msgspec.ValidationError as exc:
        raise DurabilityError(f"replacement for seq {cmd.seq} is invalid: {exc}",
                              code="BAD_CORRECTION") from exc
    out.seq, out.ts = cmd.seq, cmd.ts
    return out


def load(path: Path) -> Correction:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DurabilityError(f"cannot read {path}: {exc}", code="BAD_CORRECTION") from exc
    try:
        return msgspec.json.decode(raw, type=Correction).validate()
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise DurabilityError(f"{path}: {exc}", code="BAD_CORRECTION") from exc
