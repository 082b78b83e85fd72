"""The drill report: timeline, figures, checks, PASS/FAIL; ``report.json`` and the console."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: figures every drill reports (``None`` = not applicable to this drill)
FIGURES = ("valid_orders_refused", "time_to_recover_s", "acknowledged_commands_lost",
           "liquidations_caused", "compensation_owed", "longest_order_entry_pause_s")


@dataclass
class Mark:
    t: float
    kind: str            # "step", "fault", "response", "check", "info"
    text: str


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class Report:
    drill: str
    title: str
    incident: str
    seed: int
    short: bool
    guards: bool
    timeline: list[Mark] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    #: accepted / refused order-entry attempts per time bucket, and each market's mode over time
    series: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    error: str = ""

    @property
    def passed(self) -> bool:
        return not self.error and bool(self.checks) and all(c.ok for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["result"] = "PASS" if self.passed else "FAIL"
        return out

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n")

    def text(self) -> str:
        lines = [f"drill {self.drill}: {self.title}", f"  incident: {self.incident}",
                 f"  seed {self.seed}, {'short' if self.short else 'full'} run, "
                 f"guards {'on' if self.guards else 'OFF'}", "", "timeline"]
        for m in self.timeline:
            lines.append(f"  {m.t:8.2f}s  {m.kind:<8} {m.text}")
        lines += ["", "figures"]
        for name in FIGURES:
            lines.append(f"  {name:<30} {_fmt(self.figures.get(name))}")
        for name, value in sorted(self.figures.items()):
            if name not in FIGURES:
                lines.append(f"  {name:<30} {_fmt(value)}")
        lines += ["", "checks"]
        for c in self.checks:
            lines.append(f"  [{'ok' if c.ok else 'FAIL'}] {c.name}" + (f": {c.detail}"
                                                                       if c.detail else ""))
        if self.error:
            lines.append(f"  [FAIL] drill error: {self.error}")
        for what, where in sorted(self.files.items()):
            lines.append(f"{what}: {where}")
        lines.append("PASS" if self.passed else "FAIL")
        return "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)
