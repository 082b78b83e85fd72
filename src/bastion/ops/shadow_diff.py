"""Event-by-event and hash-by-hash comparison of two engine runs over the same feed.

Intended differences are declared in a TOML file and counted apart from the rest::

    [[difference]]
    event = "Trade"                      # event type
    fields = ["maker_fee", "taker_fee"]  # only these may differ (omit: any field)
    reason = "fees round up from v2"

A state-hash mismatch is explained only once an intended difference has been seen (state then
legitimately differs); a hash mismatch with identical events is a hidden state change.
"""

from __future__ import annotations

import struct
import tomllib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

OUT_HEAD = struct.Struct(">I")
MAX_EXAMPLES = 5


class IntendedDifference(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    event: str
    reason: str
    fields: list[str] = []


class IntendedFile(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    difference: list[IntendedDifference] = []


class ShadowInputError(Exception):
    code = "SHADOW_INPUT"


def load_intended(path: str | Path | None) -> list[IntendedDifference]:
    if path is None:
        return []
    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text("utf-8"))
        rules = msgspec.convert(doc, IntendedFile, strict=True).difference
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ShadowInputError(f"cannot read intended differences {p}: {exc}") from exc
    except msgspec.ValidationError as exc:
        raise ShadowInputError(f"intended differences {p}: {exc}") from exc
    for i, rule in enumerate(rules):
        if not rule.reason.strip():
            raise ShadowInputError(f"intended differences {p}: difference[{i}].reason is empty")
    return rules


@dataclass
class Divergence:
    seq: int
    baseline: list[dict[str, Any]]
    candidate: list[dict[str, Any]]
    unexplained: list[str]

    def differing_fields(self) -> list[str]:
        """``Trade[1].taker_fee`` for each field that differs between same-type events."""
        out = []
        for i, (a, b) in enumerate(zip(self.baseline, self.candidate, strict=False)):
            if _event_type(a) == _event_type(b):
                out += [f"{_event_type(a)}[{i}].{k}" for k in sorted(set(a) | set(b))
                        if a.get(k) != b.get(k)]
        return out


@dataclass
class DiffResult:
    commands: int = 0
    divergent_events: int = 0
    divergent_commands: int = 0
    unexplained: Counter[str] = field(default_factory=Counter)
    intended: Counter[str] = field(default_factory=Counter)
    hash_checks: int = 0
    hash_mismatches: int = 0
    unexplained_hash_mismatch_seq: int = 0
    first: Divergence | None = None
    final_hash_baseline: str = ""
    final_hash_candidate: str = ""
    length_mismatch: str = ""

    @property
    def clean(self) -> bool:
        return (not self.unexplained and not self.unexplained_hash_mismatch_seq
                and not self.length_mismatch)


def read_frames(path: Path) -> Iterator[tuple[int, bytes, str]]:
    decode = msgspec.msgpack.decode
    with path.open("rb") as f:
        while head := f.read(OUT_HEAD.size):
            (length,) = OUT_HEAD.unpack(head)
            seq, events, digest = decode(f.read(length))
            yield int(seq), bytes(events), str(digest)


def _event_type(ev: dict[str, Any]) -> str:
    return str(ev.get("type", "?"))


def _classify(a: list[dict[str, Any]], b: list[dict[str, Any]],
              rules: dict[str, IntendedDifference]) -> tuple[list[str], list[str]]:
    """(unexplained, intended) labels for one command's differing events."""
    unexplained: list[str] = []
    intended: list[str] = []
    for i in range(max(len(a), len(b))):
        ea = a[i] if i < len(a) else None
        eb = b[i] if i < len(b) else None
        if ea == eb:
            continue
        if ea is None or eb is None:
            present = eb if ea is None else ea
            assert present is not None
            side = "baseline" if ea is None else "candidate"
            unexplained.append(f"{_event_type(present)} (missing in {side})")
            continue
        ta, tb = _event_type(ea), _event_type(eb)
        if ta != tb:
            unexplained.append(f"{ta} -> {tb}")
            continue
        differing = {k for k in set(ea) | set(eb) if ea.get(k) != eb.get(k)}
        rule = rules.get(ta)
        if rule is not None and (not rule.fields or differing <= set(rule.fields)):
            intended.append(ta)
        else:
            unexplained.append(ta)
    return unexplained, intended


def compare(baseline: Path, candidate: Path, rules: list[IntendedDifference]) -> DiffResult:
    """Walk both outputs in lockstep; both must cover the same sequence numbers."""
    by_type = {r.event: r for r in rules}
    res = DiffResult()
    decode = msgspec.msgpack.decode
    seen_intended = False
    left, right = read_frames(baseline), read_frames(candidate)
    for fa, fb in zip(left, right, strict=False):
        (sa, ea, ha), (sb, eb, hb) = fa, fb
        if sa != sb:
            res.length_mismatch = f"baseline at seq {sa}, candidate at seq {sb}"
            return res
        if sa == -1:
            res.final_hash_baseline, res.final_hash_candidate = ha, hb
        else:
            res.commands += 1
        if ea != eb:
            a = decode(ea) if ea else []
            b = decode(eb) if eb else []
            res.divergent_events += max(len(a), len(b))
            bad, ok = _classify(a, b, by_type)
            res.intended.update(ok)
            seen_intended = seen_intended or bool(ok)
            if bad:
                res.divergent_commands += 1
                res.unexplained.update(bad)
                if res.first is None:
                    res.first = Divergence(seq=sa, baseline=a, candidate=b, unexplained=bad)
        if ha and hb:
            res.hash_checks += 1
            if ha != hb:
                res.hash_mismatches += 1
                if not seen_intended and not res.unexplained \
                        and not res.unexplained_hash_mismatch_seq:
                    res.unexplained_hash_mismatch_seq = sa
    rest_a, rest_b = next(left, None), next(right, None)
    if rest_a is not None or rest_b is not None:
        res.length_mismatch = "one run produced more output than the other"
    return res
