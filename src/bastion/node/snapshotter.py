"""Fork-based snapshots: the pause is one ``fork()``; the copy-on-write child encodes, writes and
fsyncs the state while the parent keeps sequencing and applying commands."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bastion import acktrace
from bastion.core.engine import Engine
from bastion.journal.errors import DurabilityError
from bastion.node.recovery import write_snapshot
from bastion.snapshots.store import AUTO, SnapshotInfo, SnapshotStore


@dataclass
class SnapshotJob:
    seq: int
    name: str
    pid: int
    pause_s: float
    started: float
    future: asyncio.Future[SnapshotInfo]
    read_fd: int
    output: bytearray = field(default_factory=bytearray)


class ForkSnapshotter:
    def __init__(self, store: SnapshotStore, loop: asyncio.AbstractEventLoop,
                 hooks: list[Callable[[int], None]] | None = None) -> None:
        self.store = store
        self.loop = loop
        #: run in the child after the snapshot is durable, with its seq: state derived from
        #: the same moment (a gateway's read model) is saved alongside, consistent by the fork
        self.hooks = hooks if hooks is not None else []
        self.job: SnapshotJob | None = None
        self.pauses: list[float] = []

    @property
    def busy(self) -> bool:
        return self.job is not None

    def start(self, engine: Engine, *, term: int, created_ms: int, name: str = AUTO) -> SnapshotJob:
        """Fork a child that writes the engine's current state; returns at once."""
        if self.job is not None:
            raise DurabilityError(
                f"snapshot of seq {self.job.seq} still being written", code="SNAPSHOT_BUSY"
            )
        read_fd, write_fd = os.pipe()
        t0 = time.perf_counter()
        try:
            pid = os.fork()
        except OSError:
            os.close(read_fd)
            os.close(write_fd)
            raise
        if pid == 0:  # child: never returns
            _child(self.store, engine, term, created_ms, name, write_fd, self.hooks)
        pause = time.perf_counter() - t0
        trace = acktrace.TRACE
        if trace is not None:
            trace.event("snapshot_fork", acktrace.now() - int(pause * 1e9), acktrace.now(),
                        engine.seq)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        self.pauses.append(pause)
        job = SnapshotJob(engine.seq, name, pid, pause, t0, self.loop.create_future(), read_fd)
        self.job = job
        self.loop.add_reader(read_fd, self._on_pipe, job, read_fd)
        return job

    def _on_pipe(self, job: SnapshotJob, fd: int) -> None:
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            return
        if chunk:
            job.output += chunk
            return
        self._finish(job)

    def _finish(self, job: SnapshotJob) -> None:
        self.loop.remove_reader(job.read_fd)
        while True:
            try:
                chunk = os.read(job.read_fd, 4096)
            except BlockingIOError:
                break
            if not chunk:
                break
            job.output += chunk
        os.close(job.read_fd)
        _, status = os.waitpid(job.pid, 0)
        self.job = None
        if job.future.done():
            return
        message = job.output.decode(errors="replace")
        if os.waitstatus_to_exitcode(status) == 0 and message.startswith("OK "):
            name = message[3:].strip()
            seq_text, _, rest = name.partition("-")
            info = SnapshotInfo(self.store.directory / name, int(seq_text), rest[: -len(".snap")])
            job.future.set_result(info)
            return
        code, _, text = message.partition(" ")
        if not message:
            code, text = "SNAPSHOT_FAILED", f"snapshot child exited with status {status}"
        job.future.set_exception(DurabilityError(text, code=code or "SNAPSHOT_FAILED"))



def _child(
    store: SnapshotStore, engine: Engine, term: int, created_ms: int, name: str, report_fd: int,
    hooks: list[Callable[[int], None]],
) -> None:
    code = 1
    try:
        gc.disable()
        with contextlib.suppress(OSError):
            os.nice(10)  # trading keeps the CPU; the snapshot can take a little longer
        os.closerange(3, report_fd)
        os.closerange(report_fd + 1, 1 << 16)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        info = write_snapshot(store, engine, term=term, created_ms=created_ms, name=name)
        for hook in hooks:
            with contextlib.suppress(Exception):  # the snapshot itself is already durable
                hook(info.seq)
        os.write(report_fd, f"OK {info.path.name}".encode())
        code = 0
    except DurabilityError as exc:
        _report(report_fd, f"{exc.code} {exc.message}")
    except BaseException as exc:  # the child must always reach _exit
        _report(report_fd, f"SNAPSHOT_FAILED {type(exc).__name__}: {exc}")
    finally:
        os._exit(code)


def _report(fd: int, text: str) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, text.encode(errors="replace")[:4000])
