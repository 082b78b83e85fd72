"""What a drill is: a fault and the documented response, run against a live deployment.

A drill subclasses ``Drill`` and overrides ``fault`` and ``response`` (and, when it needs
them, ``prepare`` to seed history, ``traffic`` to pick markets, ``verify`` for its own
checks). Everything else (deployment, bots, sampling modes, figures, invariants, report, plot)
is the runner's job, the same for every drill.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bastion.drills.bots import Crew, Tape
from bastion.drills.deployment import Deployment
from bastion.drills.report import Check, Mark, Report


@dataclass
class DrillOptions:
    seed: int = 1
    #: CI mode: shorter traffic phases and protection periods (each drill < 60 s)
    short: bool = False
    guards: bool = True
    out: Path | None = None


@dataclass
class Run:
    """One execution of a drill: the handles a drill's steps use."""

    opts: DrillOptions
    root: Path
    deployment: Deployment
    report: Report
    tape: Tape = field(default_factory=Tape)
    crew: Crew | None = None
    #: journal seq of the fault (liquidations are counted after it), and its tape time
    fault_seq: int = 0
    fault_t: float | None = None
    #: acknowledged orders after this tape time were abandoned by a deliberate rollback
    rollback_t: float | None = None
    #: free-form state the drill keeps between its steps
    state: dict[str, Any] = field(default_factory=dict)

    def note(self, text: str, kind: str = "step") -> None:
        self.report.timeline.append(Mark(round(self.tape.now(), 3), kind, text))

    def faulted(self, text: str, seq: int = 0) -> None:
        self.fault_t = self.tape.now()
        self.fault_seq = seq
        self.note(text, "fault")

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.report.checks.append(Check(name, bool(ok), detail))
        self.note(f"{'ok' if ok else 'FAILED'}: {name}" + (f" ({detail})" if detail else ""),
                  "check")
        return bool(ok)

    def figure(self, name: str, value: Any) -> None:
        self.report.figures[name] = value

    def seconds(self, full: float, short: float) -> float:
        return short if self.opts.short else full

    async def sleep(self, full: float, short: float) -> None:
        await asyncio.sleep(self.seconds(full, short))


class Drill:
    """Override ``fault`` and ``response``; the class attributes describe the drill."""

    name = "drill"
    title = ""
    incident = ""
    #: markets the bots trade (a maker and a taker each)
    markets: tuple[str, ...] = ("BTC-USDT",)
    #: seconds of normal traffic before the fault (full, short)
    warmup: tuple[float, float] = (10.0, 3.0)
    #: seconds of traffic after the response, before the final checks (full, short)
    cooldown: tuple[float, float] = (10.0, 3.0)

    def deployment(self, root: Path, opts: DrillOptions) -> Deployment:
        """The deployment to run against (override to seed history or set env)."""
        return Deployment(root)

    async def prepare(self, deployment: Deployment, opts: DrillOptions) -> None:
        """Before the first start: seed the journal (``deployment.seed``) if needed."""

    async def fault(self, run: Run) -> None:
        raise NotImplementedError

    async def response(self, run: Run) -> None:
        raise NotImplementedError

    async def verify(self, run: Run) -> None:
        """Drill-specific checks, after traffic stopped and while the deployment is up."""
