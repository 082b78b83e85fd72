"""Shadow run: a candidate engine version and the current one over the same journal, diffed.

The journal range is copied once into a feed file (read-only, so a live node keeps running);
each version then runs in its own niced process with ``PYTHONPATH`` at its source, built from
a directory or a git ref (``git archive`` into a temporary directory). Nothing is imported
from the candidate into this process.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import bastion
from bastion.journal.base import Journal
from bastion.journal.errors import DurabilityError
from bastion.journal.local import LocalJournal
from bastion.node.layout import DataDir
from bastion.ops import shadow_worker
from bastion.ops.shadow_diff import DiffResult, IntendedDifference, ShadowInputError, compare
from bastion.snapshots.store import SnapshotStore

WORKER = Path(shadow_worker.__file__)
GIT_TIMEOUT = 120


@dataclass(frozen=True)
class RunStats:
    label: str
    source: str
    commands: int
    apply_seconds: float
    final_hash: str

    @property
    def ops_per_second(self) -> float:
        return self.commands / self.apply_seconds if self.apply_seconds > 0 else 0.0


@dataclass
class ShadowReport:
    first_seq: int
    last_seq: int
    snapshot: str | None
    baseline: RunStats
    candidate: RunStats
    diff: DiffResult


def current_source() -> Path:
    """The ``src`` directory this process's ``bastion`` package lives in."""
    return Path(bastion.__file__).resolve().parent.parent


def _package_root(directory: Path) -> Path | None:
    for root in (directory / "src", directory):
        if (root / "bastion" / "core" / "engine.py").is_file():
            return root
    return None


def materialize(candidate: str, workdir: Path, repo: Path) -> tuple[Path, str]:
    """The importable source root of a candidate given as a path or a git ref, and a label."""
    as_path = Path(candidate)
    if as_path.exists():
        root = _package_root(as_path.resolve())
        if root is None:
            raise ShadowInputError(f"{candidate} holds no bastion package (looked for "
                                   "src/bastion/core/engine.py and bastion/core/engine.py)")
        return root, str(as_path.resolve())
    git = ["git", "-C", str(repo)]
    try:
        rev = subprocess.run([*git, "rev-parse", "--verify", "--quiet", f"{candidate}^{{commit}}"],
                             capture_output=True, text=True, timeout=GIT_TIMEOUT)
        if rev.returncode != 0:
            raise ShadowInputError(f"{candidate!r} is neither a directory nor a git ref of "
                                   f"{repo}")
        commit = rev.stdout.strip()
        tar = subprocess.run([*git, "archive", "--format=tar", commit, "src"],
                             capture_output=True, timeout=GIT_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ShadowInputError(f"git failed for {candidate!r}: {exc}") from exc
    if tar.returncode != 0:
        raise ShadowInputError(f"git archive {commit} failed: {tar.stderr.decode()[-300:]}")
    dest = workdir / f"candidate-{commit[:12]}"
    with tarfile.open(fileobj=io.BytesIO(tar.stdout)) as tf:
        tf.extractall(dest, filter="data")
    root = _package_root(dest)
    if root is None:
        raise ShadowInputError(f"commit {commit[:12]} holds no src/bastion package")
    return root, f"{candidate} ({commit[:12]})"


def write_feed(data: Path, workdir: Path, snapshot: str | None,
               to_seq: int | None) -> tuple[Path, Path | None, int, int, str | None]:
    """Copy the journal range (and the start state) into files the workers read."""
    layout = DataDir.at(data).require()
    state_path: Path | None = None
    start = 0
    snap_id: str | None = None
    if snapshot is not None:
        store = SnapshotStore(layout.snapshots)
        info = store.find(snapshot)
        header, payload = store.read(info)
        state_path = workdir / "start.state"
        state_path.write_bytes(payload)
        start, snap_id = header.seq, info.id
    feed = workdir / "feed.bin"
    with LocalJournal(layout.journal, archive_dir=layout.journal_archive,
                      readonly=True) as journal:
        end = copy_range(journal, feed, start, to_seq)
    return feed, state_path, start + 1, end, snap_id


def copy_range(journal: Journal, feed: Path, start: int, to_seq: int | None) -> int:
    """Records ``start+1 .. to_seq`` (default: the end) of any journal backend into a feed
    file; returns the last seq copied."""
    end = journal.last_seq if to_seq is None else to_seq
    if end > journal.last_seq:
        raise DurabilityError(f"--to-seq {end} is beyond the journal's end "
                              f"({journal.last_seq})", code="SEQ_BEYOND_END")
    if end <= start:
        raise DurabilityError(f"nothing to compare: range {start + 1}..{end}", code="BAD_RANGE")
    if start + 1 < journal.first_seq:
        raise DurabilityError(f"the journal starts at seq {journal.first_seq}; give "
                              "--from-snapshot at or after it", code="BAD_RANGE")
    head = shadow_worker.FEED_HEAD
    with feed.open("wb") as f:
        for seq, payload in journal.read(start + 1, end):
            f.write(head.pack(seq, len(payload)))
            f.write(payload)
    return end


def run_worker(label: str, root: Path, source: str, feed: Path, state: Path | None,
               out: Path, python: str, hash_every: int) -> RunStats:
    env = dict(os.environ, PYTHONPATH=str(root), PYTHONHASHSEED="0")
    argv = [python, "-P", str(WORKER), "--feed", str(feed), "--out", str(out),
            "--hash-every", str(hash_every), "--expect-root", str(root)]
    if state is not None:
        argv += ["--state", str(state)]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=out.parent)
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "{}"
    try:
        summary = json.loads(last)
    except json.JSONDecodeError:
        summary = {}
    if proc.returncode != 0 or "error" in summary or "commands" not in summary:
        reason = summary.get("error") or proc.stderr.strip()[-800:] or f"exit {proc.returncode}"
        raise ShadowInputError(f"the {label} engine failed: {reason}")
    return RunStats(label=label, source=source, commands=int(summary["commands"]),
                    apply_seconds=float(summary["apply_seconds"]),
                    final_hash=str(summary["final_hash"]))


def shadow(candidate: str, data: Path, *, snapshot: str | None = None,
           to_seq: int | None = None, rules: list[IntendedDifference] | None = None,
           repo: Path | None = None, python: str | None = None,
           hash_every: int = 1000) -> ShadowReport:
    """Run both versions over ``data``'s journal and diff them."""
    with tempfile.TemporaryDirectory(prefix="bastion-shadow-") as tmp:
        work = Path(tmp)
        feed, state, first, last, snap_id = write_feed(data, work, snapshot, to_seq)
        cand_root, cand_label = materialize(candidate, work, repo or Path.cwd())
        return _runs(cand_root, cand_label, work, feed, state, first, last, snap_id, rules,
                     python, hash_every)


def shadow_journal(candidate: str, journal: Journal, *, to_seq: int | None = None,
                   rules: list[IntendedDifference] | None = None, repo: Path | None = None,
                   python: str | None = None, hash_every: int = 1000,
                   baseline: Path | None = None) -> ShadowReport:
    """The same over any journal backend (a cluster's replicated stream), from seq 1;
    ``baseline`` is the source root of the version running now (default: this one)."""
    with tempfile.TemporaryDirectory(prefix="bastion-shadow-") as tmp:
        work = Path(tmp)
        last = copy_range(journal, work / "feed.bin", 0, to_seq)
        cand_root, cand_label = materialize(candidate, work, repo or Path.cwd())
        return _runs(cand_root, cand_label, work, work / "feed.bin", None, 1, last, None,
                     rules, python, hash_every, baseline)


def _runs(cand_root: Path, cand_label: str, work: Path, feed: Path, state: Path | None,
          first: int, last: int, snap_id: str | None, rules: list[IntendedDifference] | None,
          python: str | None, hash_every: int, baseline: Path | None = None) -> ShadowReport:
    py = python or sys.executable
    root = baseline or current_source()
    base = run_worker("baseline", root, str(root), feed, state, work / "baseline.out", py,
                      hash_every)
    cand = run_worker("candidate", cand_root, cand_label, feed, state, work / "candidate.out",
                      py, hash_every)
    diff = compare(work / "baseline.out", work / "candidate.out", rules or [])
    return ShadowReport(first_seq=first, last_seq=last, snapshot=snap_id, baseline=base,
                        candidate=cand, diff=diff)


def report_dict(rep: ShadowReport) -> dict[str, object]:
    """The report as plain data (``--json``)."""
    d = rep.diff
    first = None
    if d.first is not None:
        first = {"seq": d.first.seq, "unexplained": d.first.unexplained,
                 "differing_fields": d.first.differing_fields(),
                 "baseline": d.first.baseline, "candidate": d.first.candidate}
    runs = {
        r.label: {"source": r.source, "commands": r.commands,
                  "apply_seconds": round(r.apply_seconds, 6),
                  "ops_per_second": round(r.ops_per_second), "final_hash": r.final_hash}
        for r in (rep.baseline, rep.candidate)
    }
    return {
        "ok": d.clean, "range": [rep.first_seq, rep.last_seq], "snapshot": rep.snapshot,
        "commands": d.commands, "divergent_commands": d.divergent_commands,
        "unexplained_by_event": dict(d.unexplained.most_common()),
        "intended_by_event": dict(d.intended.most_common()),
        "hash_checks": d.hash_checks, "hash_mismatches": d.hash_mismatches,
        "unexplained_hash_mismatch_seq": d.unexplained_hash_mismatch_seq or None,
        "length_mismatch": d.length_mismatch or None,
        "first_divergence": first, "runs": runs,
    }
