"""A test run killed outright (SIGKILL, as a CI timeout ends it) leaves no NATS server, node,
gateway, custody simulator or server (``serverproc``) running: every child dies with the run
(``bastion.cluster.childlife``), also the grandchildren (the custody simulator's worker); and
so does a SIGKILLed ``bastion cluster up``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from bastion.cluster.natsproc import free_port
from bastion.cluster.supervisor import bastion_cmd, spawn
from cluster_harness import TEST_ENV

TESTS = Path(__file__).resolve().parent.parent

INNER = '''
import os
import time
from pathlib import Path

from cluster_harness import running
from serverproc import running as server


def test_hold() -> None:
    root = Path(os.environ["HOLD_ROOT"])
    with running(root / "cluster", nodes=1, gateways=1), server(root / "server"):
        Path(os.environ["HOLD_READY"]).write_text("up")
        time.sleep(600)
'''


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time) of a live process, None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[1]), fields[0], int(fields[19])


def _descendants(root: int) -> dict[int, int]:
    """Every process below ``root``, with its start time (to tell it from a reused pid)."""
    parents: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))) is not None:
            parents.setdefault(st[0], []).append(int(entry))
            starts[int(entry)] = st[2]
    found: dict[int, int] = {}
    todo = [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            found[child] = starts[child]
            todo.append(child)
    return found


def _alive(procs: dict[int, int]) -> list[int]:
    """Those still running (a zombie waiting for a reaper has ended)."""
    return [pid for pid, start in procs.items()
            if (st := _stat(pid)) is not None and st[2] == start and st[1] not in "ZX"]


def _kill_leaves_no_child(run: subprocess.Popen[bytes], ready: Path, log: Path,
                          expect: int) -> None:
    """Once ``ready`` exists, SIGKILL ``run`` (at least ``expect`` descendants): every one ends
    within 20 s."""
    children: dict[int, int] = {}
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert run.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the cluster did not come up"
            time.sleep(0.2)
        children = _descendants(run.pid)
        assert len(children) >= expect, children  # and maybe a snapshot being forked
        run.kill()
        run.wait()
        deadline = time.monotonic() + 20
        while left := _alive(children):
            assert time.monotonic() < deadline, f"still running after the run was killed: {left}"
            time.sleep(0.1)
    finally:
        for pid in _alive(children):
            os.kill(pid, signal.SIGKILL)
        if run.poll() is None:
            run.kill()
            run.wait()


def test_a_killed_test_run_leaves_no_child(tmp_path: Path) -> None:
    (tmp_path / "test_hold.py").write_text(INNER)
    ready = tmp_path / "ready"
    env = {**os.environ, "PYTHONPATH": str(TESTS), "HOLD_ROOT": str(tmp_path / "cluster"),
           "HOLD_READY": str(ready)}
    with open(tmp_path / "run.log", "wb") as log:
        run = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir",
             str(tmp_path), str(tmp_path / "test_hold.py")],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    # 3 NATS servers, a node, a gateway, the custody simulator and its worker, a server
    _kill_leaves_no_child(run, ready, tmp_path / "run.log", 8)


def test_a_killed_cluster_up_leaves_no_child(tmp_path: Path) -> None:
    data = tmp_path / "cluster"
    with open(tmp_path / "up.log", "wb") as log:
        up = subprocess.Popen(bastion_cmd("cluster", "up", "--data", str(data), "--port",
                                          str(free_port()), "--nodes", "1", "--nats-port", "0"),
                              env={**os.environ, **TEST_ENV}, stdout=log,
                              stderr=subprocess.STDOUT)
    # its state file is written once every process is started
    _kill_leaves_no_child(up, data / "cluster.json", tmp_path / "up.log", 7)


def test_a_child_started_off_the_main_thread_outlives_that_thread(tmp_path: Path) -> None:
    """The kernel ties the child to the thread that forked it: one started by a worker thread
    (``asyncio.to_thread``) would die with that thread, so it is not bound."""
    started: list[subprocess.Popen[bytes]] = []
    worker = threading.Thread(target=lambda: started.append(
        spawn([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "log")))
    worker.start()
    worker.join()
    try:
        time.sleep(0.5)
        assert started[0].poll() is None, "killed when the thread that started it ended"
    finally:
        started[0].kill()
        started[0].wait()
