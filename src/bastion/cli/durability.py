"""Operator commands for the durable layer: journal, snapshots, replay and rollback.

Every failure prints one line ``error: CODE: message`` and exits with status 2, so scripts can
branch on the code and humans never see a traceback for a bad path or a damaged file.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import msgspec
import typer
from rich.console import Console
from rich.table import Table

from bastion.cli.errors import clean_errors
from bastion.core.codec import decode_command
from bastion.journal.errors import DurabilityError
from bastion.journal.local import LocalJournal
from bastion.node.layout import DataDir
from bastion.node.node import Node
from bastion.node.recovery import rebuild, snapshot_checker, write_snapshot
from bastion.node.rollback import rollback
from bastion.snapshots.store import AUTO, SnapshotStore, check_name

out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True)

DataOpt = Annotated[
    Path,
    typer.Option("--data", envvar="BASTION_DATA", help="Shard data directory."),
]

journal_app = typer.Typer(help="Verify and inspect the command journal.", no_args_is_help=True)
snapshot_app = typer.Typer(help="Take, list and verify snapshots.", no_args_is_help=True)


def _journal(data: DataDir) -> LocalJournal:
    return LocalJournal(data.journal, archive_dir=data.journal_archive, readonly=True)


@journal_app.command("verify")
@clean_errors
def journal_verify(data: DataOpt = Path("data")) -> None:
    """Check every record (checksums, sequence continuity, epochs), archive included."""
    layout = DataDir.at(data).require()
    t0 = time.perf_counter()
    with _journal(layout) as journal:
        count = journal.verify()
        stats = journal.stats()
        if journal.torn_tail:
            err.print(
                f"warning: {journal.torn_tail}: an unacknowledged write (cut by a crash, or "
                "still in progress); a node starting on it truncates it",
                markup=False,
            )
    out.print(
        f"journal OK: {count} records, seqs {stats.first_seq}..{stats.last_seq}, "
        f"epoch {stats.epoch}, {stats.segments} live segment(s), "
        f"{stats.archived_segments} archived (through seq {stats.archived_through}), "
        f"checked in {time.perf_counter() - t0:.3f} s"
    )


@journal_app.command("inspect")
@clean_errors
def journal_inspect(
    data: DataOpt = Path("data"),
    from_seq: Annotated[int | None, typer.Option("--from", help="First seq.")] = None,
    to_seq: Annotated[int | None, typer.Option("--to", help="Last seq (default: +99).")] = None,
) -> None:
    """Print records as JSON lines: seq, term, size and the decoded command."""
    layout = DataDir.at(data).require()
    with _journal(layout) as journal:
        first = journal.first_seq if from_seq is None else from_seq
        last = min(journal.last_seq, first + 99) if to_seq is None else to_seq
        if first > journal.last_seq:
            raise DurabilityError(
                f"seq {first} is beyond the end of the journal ({journal.last_seq})",
                code="SEQ_BEYOND_END",
            )
        if first < 1 or last < first:
            raise DurabilityError(f"empty or invalid range {first}..{last}", code="BAD_RANGE")
        for seq, payload in journal.read(first, last):
            try:
                body = msgspec.json.encode(decode_command(payload)).decode()
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                body = msgspec.json.encode({"undecodable": str(exc)}).decode()
            out.print(f'{{"seq": {seq}, "bytes": {len(payload)}, "command": {body}}}', markup=False)


@snapshot_app.command("take")
@clean_errors
def snapshot_take(
    data: DataOpt = Path("data"),
    name: Annotated[str, typer.Option(help="Named snapshots survive retention.")] = AUTO,
) -> None:
    """Recover the stopped shard and write a snapshot of its current state."""
    check_name(name)
    layout = DataDir.at(data).require()
    node = Node(layout.root)
    try:
        t0 = time.perf_counter()
        info = node.snapshot_offline(name)
    finally:
        node.close_offline()
    out.print(
        f"snapshot {info.id} at seq {info.seq} written in {time.perf_counter() - t0:.3f} s "
        f"(recovery {node.recovery.seconds:.3f} s)"
    )


@snapshot_app.command("list")
@clean_errors
def snapshot_list(data: DataOpt = Path("data")) -> None:
    """Snapshots, oldest first (headers only; use verify for a full check)."""
    layout = DataDir.at(data).require()
    store = SnapshotStore(layout.snapshots)
    table = Table("id", "seq", "name", "term", "bytes", "created (UTC)", "state hash")
    for info in store.entries():
        try:
            h = store.header(info)
            created = datetime.fromtimestamp(h.created_ms / 1000, tz=UTC)
            table.add_row(
                info.id,
                str(h.seq),
                h.name,
                str(h.term),
                str(info.path.stat().st_size),
                created.strftime("%Y-%m-%d %H:%M:%S"),
                h.state_hash[:16],
            )
        except DurabilityError as exc:
            table.add_row(info.id, str(info.seq), info.name, "?", "?", "?", f"[red]{exc.code}")
    out.print(table)


@snapshot_app.command("verify")
@clean_errors
def snapshot_verify(
    ref: Annotated[str | None, typer.Argument(help="Name or id (default: all).")] = None,
    data: DataOpt = Path("data"),
) -> None:
    """Full check: checksums, state decodes, state hash, and the timeline matches the journal."""
    layout = DataDir.at(data).require()
    store = SnapshotStore(layout.snapshots)
    infos = [store.find(ref)] if ref else store.entries()
    bad: list[str] = []
    with _journal(layout) as journal:
        check = snapshot_checker(journal, {})
        for info in infos:
            try:
                header, payload = store.read(info)
                reason = check(info, header, payload)
            except DurabilityError as exc:
                reason = str(exc)
            if reason is None:
                out.print(f"OK   {info.id} seq {info.seq} hash {header.state_hash[:16]}")
            else:
                out.print(f"BAD  {info.id}: {reason}", markup=False)
                bad.append(info.id)
    if bad:
        raise DurabilityError(
            f"{len(bad)} of {len(infos)} snapshot(s) failed: {', '.join(bad)}",
            code="SNAPSHOT_INVALID",
        )
    out.print(f"{len(infos)} snapshot(s) verified")


@clean_errors
def replay_cmd(
    to_seq: Annotated[int, typer.Option("--to-seq", help="Rebuild the state at this seq.")],
    out_snapshot: Annotated[
        str | None, typer.Option("--out-snapshot", help="Save that state as a named snapshot.")
    ] = None,
    data: DataOpt = Path("data"),
) -> None:
    """Rebuild the state at a past sequence number (read-only; the shard may keep running)."""
    if out_snapshot is not None:
        check_name(out_snapshot)
    layout = DataDir.at(data).require()
    store = SnapshotStore(layout.snapshots)
    with _journal(layout) as journal:
        engine, report = rebuild(journal, store, to_seq)
        term = journal.term_at(to_seq)
    out.print(report.summary())
    out.print(f"state hash at seq {engine.seq}: {report.state_hash}")
    if out_snapshot is not None:
        info = write_snapshot(
            store, engine, term=term, created_ms=time.time_ns() // 1_000_000, name=out_snapshot
        )
        out.print(f"wrote snapshot {info.id}")


@clean_errors
def rollback_cmd(
    who: Annotated[str, typer.Option("--who", help="Operator taking the decision.")],
    why: Annotated[str, typer.Option("--why", help="Reason, recorded in audit.jsonl.")],
    to_snapshot: Annotated[
        str | None, typer.Option("--to-snapshot", help="Snapshot name or id.")
    ] = None,
    to_seq: Annotated[int | None, typer.Option("--to-seq", help="Journal position.")] = None,
    data: DataOpt = Path("data"),
    live: Annotated[bool, typer.Option("--live", help="Roll back the RUNNING server at --url: "
                                       "halt, roll back, restart, reopen in recovery.")] = False,
    recovery_s: Annotated[float, typer.Option("--recovery-s", help="With --live: seconds in "
                                              "recovery after the restart.")] = 600.0,
    url: Annotated[str, typer.Option("--url", envvar="BASTION_URL")] = "http://127.0.0.1:8080",
    admin_token: Annotated[str, typer.Option("--admin-token", envvar="BASTION_ADMIN_TOKEN",
                                             show_default=False)] = "",
) -> None:
    """Roll the stopped shard back to a snapshot or seq (or, with --live, the running one);
    the abandoned tail is archived."""
    if live:
        from bastion.cli.live import rollback_live

        rollback_live(url, admin_token, who, why, to_snapshot, to_seq, recovery_s)
        return
    report = rollback(data, who=who, why=why, to_snapshot=to_snapshot, to_seq=to_seq, progress=None)
    out.print(report.summary(), markup=False)
