"""Read-model checkpoints (issue 11): written by the node's snapshot child and, between
snapshots, by the gateway's own child; a restart restores the newest usable one plus the
commands after it, and a damaged, foreign-timeline or beyond-the-end checkpoint falls back
(to an older checkpoint, or to replaying the journal) with the same read model."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.api.read import checkpoint as checkpoint_module
from bastion.api.read import model
from bastion.api.read.checkpoint import (
    HEADER,
    HEADER_3,
    Checkpoint,
    Checkpoints,
    PeriodicCheckpoints,
    Restorer,
    _export,
    decode,
)
from bastion.api.service.gateway import Gateway
from bastion.core import commands as C
from bastion.core.engine import Engine
from bastion.demo import BTC_USDT, BTC_USDT_PERP, demo_perp_setup, demo_setup
from bastion.journal.local import LocalJournal
from bastion.node import Node, NodeConfig
from bastion.node.hugepages import CollapseResult

ACCOUNTS = 4
MID = 5_000_000


def _orders(n: int, offset: int) -> list[C.Command]:
    """Crossing and resting orders, some with client ids (reused, so an id moves to a newer
    order) and cancels by client id, so fills, closed orders and client ids all exist."""
    cmds: list[C.Command] = []
    for i in range(n):
        k = offset + i
        account = 1 + k % ACCOUNTS
        if k % 7 == 6:
            cmds.append(C.CancelOrder(account=account, market=BTC_USDT,
                                      client_id=f"c{(k - 8) % 40}"))
            continue
        side = "buy" if k // 4 % 2 else "sell"  # each account on both sides
        price = MID + ((k * 7) % 11 - 5) * 10
        market = BTC_USDT_PERP if k % 5 == 1 else BTC_USDT  # perpetual fills realize PnL
        cmds.append(C.PlaceOrder(account=account, market=market, side=side, price=price,
                                 qty=(1_000 + k % 3 * 1_000) * (100 if market != BTC_USDT else 1),
                                 client_id=f"c{k % 40}" if k % 3 == 0 else ""))
    return cmds


@pytest.fixture(autouse=True)
def _small_caps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Caps a short workload exceeds, so evicting old history is part of every test."""
    monkeypatch.setattr(model, "CLOSED_PER_ACCOUNT", 60)
    monkeypatch.setattr(model, "FILLS_PER_ACCOUNT", 90)


def _setup() -> list[C.Command]:
    accounts = list(range(1, ACCOUNTS + 1))
    now = int(time.time() * 1000)
    return [*demo_setup(accounts), *demo_perp_setup(accounts),
            C.UpdateIndex(market=BTC_USDT_PERP, sources=[
                C.SourcePrice(source=s, price=MID, ts=now) for s in ("a", "b", "c")])]


def _config() -> NodeConfig:
    """No huge-page collapse before forks: each checkpoint at the batch that makes it due."""
    return NodeConfig(snapshot_every_commands=0, snapshot_every_seconds=0, progress=False,
                      hugepage_collapse_min_rss_mb=0)


def _build(directory: Path, every: int, snapshot_after: int | None, total: int) -> str:
    """Journal ``total`` order commands through a node with a gateway writing checkpoints;
    returns the node's state hash."""

    async def run() -> str:
        node = Node(directory, config=_config())
        await node.start()
        gw = Gateway(node)
        gw.attach(None, Checkpoints(directory / "api" / "readmodel"), every)
        await node.submit_many(_setup())
        done = 0
        while done < total:
            await node.submit_many(_orders(100, done))
            done += 100
            if snapshot_after is not None and done == snapshot_after:
                await node.snapshot()
            if gw.checkpointer is not None:
                while gw.checkpointer._running():  # let each child finish: deterministic files
                    await asyncio.sleep(0.01)
        h = node.engine.state_hash()
        await node.close()
        gw.detach()
        return h

    return asyncio.run(run())


def _restart(directory: Path, restore: bool) -> tuple[Gateway, Restorer | None, Node]:
    restorer = Restorer(Checkpoints(directory / "api" / "readmodel")) if restore else None
    node = Node(directory, config=_config(),
                recovery_sink=restorer.sink if restorer is not None else None)
    gw = Gateway(node)
    gw.attach(restorer)
    return gw, restorer, node


def _image(gw: Gateway) -> bytes:
    return msgspec.msgpack.encode(_export(gw.readmodel))


def _reference(directory: Path) -> bytes:
    gw, _, node = _restart(directory, restore=False)
    try:
        return _image(gw)
    finally:
        node.close_offline()


def _files(directory: Path) -> list[Path]:
    return sorted((directory / "api" / "readmodel").glob("*.rmck"))


def test_gateway_checkpoints_between_snapshots_shorten_the_followed_tail(tmp_path: Path) -> None:
    data = tmp_path / "data"
    expected = _build(data, every=500, snapshot_after=400, total=2_000)
    files = _files(data)
    assert len(files) == 3  # newest three kept
    newest = int(files[-1].name[:-5])
    assert files[-1].stat().st_mode & 0o777 == 0o600
    gw, restorer, node = _restart(data, restore=True)
    try:
        assert restorer is not None and restorer.checkpoint is not None
        assert node.engine.state_hash() == expected
        assert node.recovery.snapshot_seq < newest  # the node replayed from its snapshot ...
        assert restorer.base_seq == newest  # ... the read model started at its own checkpoint
        assert restorer.tail == node.engine.seq - newest < 500
        assert gw.readmodel is restorer.restored
        image = _image(gw)
    finally:
        node.close_offline()
    assert image == _reference(data)


def _flip_payload_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[HEADER.size + len(raw) // 3] ^= 0x40
    path.write_bytes(bytes(raw))


def _set_term(path: Path, term: int) -> None:
    raw = bytearray(path.read_bytes())
    struct.pack_into("<Q", raw, 4 + 2 + 8, term)  # magic, format, seq, *term*
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage", ["checksum", "truncated", "format", "all"])
def test_damaged_checkpoint_falls_back(tmp_path: Path, damage: str,
                                       caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "data"
    _build(data, every=500, snapshot_after=None, total=1_600)
    files = _files(data)
    victims = files if damage == "all" else files[-1:]
    for path in victims:
        if damage in ("checksum", "all"):
            _flip_payload_byte(path)
        elif damage == "truncated":
            path.write_bytes(path.read_bytes()[: HEADER.size + 10])
        else:
            raw = bytearray(path.read_bytes())
            struct.pack_into("<H", raw, 4, 99)
            path.write_bytes(bytes(raw))
    caplog.set_level(logging.WARNING, logger="bastion.api")
    gw, restorer, node = _restart(data, restore=True)
    try:
        assert restorer is not None
        if damage == "all":
            assert restorer.checkpoint is None  # nothing usable: the journal is replayed
        else:
            assert restorer.checkpoint is not None
            assert restorer.base_seq == int(files[-2].name[:-5])  # the next older one
        image = _image(gw)
    finally:
        node.close_offline()
    assert "skipped" in caplog.text
    assert image == _reference(data)


@pytest.mark.parametrize("snapshot_after", [None, 400])
def test_checkpoint_from_another_timeline_or_beyond_the_end_is_not_used(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
        snapshot_after: int | None) -> None:
    """With a node snapshot before the checkpoint, its term and the journal's end vouch for the
    seqs between (the journal is not read at the checkpoint's seq); without, it is read."""
    data = tmp_path / "data"
    _build(data, every=500, snapshot_after=snapshot_after, total=1_200)
    newest = _files(data)[-1]
    caplog.set_level(logging.WARNING, logger="bastion.api")
    _set_term(newest, 7)  # digest covers the payload only: the header still checks out
    asked: list[int] = []
    term_at = LocalJournal.term_at
    with monkeypatch.context() as patch:
        patch.setattr(LocalJournal, "term_at",
                      lambda self, seq: asked.append(seq) or term_at(self, seq))
        gw, restorer, node = _restart(data, restore=True)
    try:
        assert restorer is not None and restorer.checkpoint is not None
        assert (node.recovery.snapshot_seq > 0) == (snapshot_after is not None)
        assert (restorer.checkpoint.seq in asked) == (snapshot_after is None)
        assert "another timeline" in caplog.text
        image = _image(gw)
    finally:
        node.close_offline()
    assert image == _reference(data)
    # a checkpoint past the journal's end (the journal was cut back): never reached, not used
    _set_term(newest, 0)
    seq = int(newest.name[:-5])
    beyond = newest.with_name(f"{seq + 10_000:020d}.rmck")
    raw = bytearray(newest.read_bytes())
    struct.pack_into("<Q", raw, 4 + 2, seq + 10_000)
    beyond.write_bytes(bytes(raw))
    caplog.clear()
    gw, restorer, node = _restart(data, restore=True)
    try:
        assert restorer is not None and restorer.checkpoint is not None
        assert restorer.checkpoint.seq == seq + 10_000
        assert "beyond the journal's end" in caplog.text
        image = _image(gw)
    finally:
        node.close_offline()
    assert image == _reference(data)


def _queries(gw: Gateway, account: int) -> bytes:
    """What the API reads of one account (history, fills, every order by id and client id)."""
    rm = gw.readmodel
    orders = rm.all_orders(account)
    by_id = [rm.order(account, r.order_id) for r in orders]
    by_client = [rm.order_by_client(account, f"c{i}") for i in range(40)]
    assert orders and all(r is not None for r in by_id)
    return msgspec.msgpack.encode([rm.open_orders(account), orders, rm.fills(account), by_id,
                                   by_client])


def test_cold_accounts_read_before_and_after_live_commands_equal_a_full_replay(
        tmp_path: Path) -> None:
    """A restored account stays encoded until first touched, and the tail the node replayed is
    put aside for it meanwhile: reading it first, or touching it with a live order first, or
    never (passed on still encoded to the next checkpoint), gives what a full replay gives."""
    data = tmp_path / "data"
    _build(data, every=500, snapshot_after=None, total=1_800)
    restorer = Restorer(Checkpoints(data / "api" / "readmodel"))
    node = Node(data, config=_config(), recovery_sink=restorer.sink)

    async def run() -> tuple[bytes, bytes, dict[int, bytes]]:
        await node.start()
        gw = Gateway(node)
        gw.attach(restorer, Checkpoints(data / "api" / "readmodel"), 1)
        rm = gw.readmodel
        assert rm is restorer.restored and 0 < restorer.tail < 500
        assert sorted(rm.cold) == [1, 2, 3, 4] and not rm.accounts  # the tail thawed nothing
        read_first = _queries(gw, 1)  # thawed by a read, its tail applied
        assert sorted(rm.cold) == [2, 3, 4]
        # resting orders of accounts 1 and 2 (nobody else's touched), reusing client ids
        live: list[C.Command] = [
            C.PlaceOrder(account=1 + k % 2, market=BTC_USDT, side="buy" if k % 4 < 2 else "sell",
                         price=MID - 500 + k % 4 // 2 * 1000, qty=1_000, client_id=f"c{k}")
            for k in range(40)]
        live.append(C.CancelOrder(account=2, market=BTC_USDT, client_id="c3"))
        await node.submit_many(live)  # thaws account 2 on a live event
        assert sorted(rm.cold) == [3, 4]
        while gw.checkpointer is not None and gw.checkpointer._running():
            await asyncio.sleep(0.01)
        await node.submit_many([C.Deposit(account=1, asset="USDT", amount=1)])  # one more file
        while gw.checkpointer is not None and gw.checkpointer._running():
            await asyncio.sleep(0.01)
        assert sorted(rm.cold) == [3, 4]  # the child passed them on encoded
        seen = {a: _queries(gw, a) for a in (1, 2, 3, 4)}
        image = _image(gw)
        await node.close()
        gw.detach()
        return read_first, image, seen

    read_first, image, seen = asyncio.run(run())
    reference = _restart(data, restore=False)[0]
    try:
        assert seen == {a: _queries(reference, a) for a in (1, 2, 3, 4)}
        assert image == _image(reference)
    finally:
        reference.node.close_offline()
    # the first read saw the account as of the restart: the reference before the live orders
    assert read_first != seen[1]
    again, restorer2, node2 = _restart(data, restore=True)
    try:
        assert restorer2 is not None and restorer2.tail <= 1  # from the checkpoint written live
        assert _image(again) == image
    finally:
        node2.close_offline()


def test_a_cold_account_that_does_not_decode_is_reseeded_from_the_engine(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Its digest checked out, so this is a bug, not damage; still, a read never fails: the
    account's open orders come back from the engine and the error is logged."""
    data = tmp_path / "data"
    _build(data, every=500, snapshot_after=None, total=600)
    gw, restorer, node = _restart(data, restore=True)
    try:
        rm = gw.readmodel
        assert restorer is not None and rm is restorer.restored and 3 in rm.cold
        rm.cold[3] = model.ColdAccount(3, memoryview(b"\xc1"))  # never valid msgpack
        caplog.set_level(logging.ERROR, logger="bastion.api")
        opened = rm.open_orders(3)
        engine_open = sorted(o.order_id for o in node.engine.orders.values() if o.account == 3)
        assert engine_open and sorted(r.order_id for r in opened) == engine_open
        assert all(rm.order(3, oid) is not None for oid in engine_open)
        assert "account 3's checkpointed history does not decode" in caplog.text
    finally:
        node.close_offline()


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """A built data directory and the image of its newest checkpoint's read model."""
    data = tmp_path_factory.mktemp("written") / "data"
    _build(data, every=500, snapshot_after=None, total=600)
    found = Checkpoints(data / "api" / "readmodel").newest(0)
    assert found is not None
    rm = decode(found[1], found[0].seq, Engine)
    assert rm is not None and rm.cold
    return data, msgspec.msgpack.encode(_export(rm))


def _newest_image(directory: Path) -> tuple[int, bytes]:
    found = Checkpoints(directory).newest(0)
    assert found is not None
    rm = decode(found[1], found[0].seq, Engine)
    assert rm is not None
    return found[0].seq, msgspec.msgpack.encode(_export(rm))


_WRITER = """
import sys
from pathlib import Path
from bastion.api.read.checkpoint import Checkpoints, decode
from bastion.core.engine import Engine

checkpoints = Checkpoints(Path(sys.argv[1]))
found = checkpoints.newest(0)
rm = decode(found[1], found[0].seq, Engine)
for account in list(rm.cold):
    rm.open_orders(account)  # thawed: the writer encodes every account again
seq = found[0].seq
print("writing", flush=True)
while True:
    seq += 1
    checkpoints.write(rm, seq, found[0].term)
"""


def test_a_writer_killed_mid_checkpoint_leaves_the_previous_one_usable(
        tmp_path: Path, written: tuple[Path, bytes]) -> None:
    """SIGKILL a process writing checkpoints back to back, at spread-out moments (encoding,
    writing, fsync, rename, removing old files): the newest valid file always holds the same
    read model, and the half-written temporaries are cleaned at the next start."""
    data, image = written
    directory = tmp_path / "readmodel"
    directory.mkdir()
    newest = _files(data)[-1]
    shutil.copy(newest, directory / newest.name)
    seqs = {int(newest.name[:-5])}
    rng = random.Random(11)
    for round_ in range(6):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(directory)],
                                stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None and proc.stdout.readline() == "writing\n"
            time.sleep(rng.uniform(0.0, 0.12))
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        seq, got = _newest_image(directory)
        assert got == image, f"round {round_}"
        assert seq >= max(seqs)
        seqs.add(seq)
        Checkpoints(directory).clean_temporaries()
        assert not list(directory.glob("*.tmp"))
    assert len(seqs) > 1  # the writer did finish some files between kills


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.one_of(st.tuples(st.just("truncate"), st.floats(0, 1, exclude_max=True)),
                     st.tuples(st.integers(1, 255), st.floats(0, 1, exclude_max=True))))
def test_any_damage_to_the_newest_checkpoint_falls_back_to_the_one_before(
        written: tuple[Path, bytes], cut: tuple[str | int, float]) -> None:
    """A truncation anywhere, or any byte changed anywhere: the file is skipped (CRC32C
    catches every error burst up to 32 bits) and the previous checkpoint is used, except a
    changed term, which the header check cannot see and the timeline check refuses."""
    data, image = written
    raw = _files(data)[-1].read_bytes()
    how, where = cut
    at = int(where * len(raw))
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        seq = int(_files(data)[-1].name[:-5])
        (directory / f"{seq - 100:020d}.rmck").write_bytes(
            raw[:6] + struct.pack("<Q", seq - 100) + raw[14:])
        if how == "truncate":
            damaged = raw[:at]
        else:
            assert isinstance(how, int)
            damaged = raw[:at] + bytes([raw[at] ^ how]) + raw[at + 1:]
        (directory / f"{seq:020d}.rmck").write_bytes(damaged)
        found = Checkpoints(directory).newest(0)
        assert found is not None
        if how != "truncate" and 14 <= at < 22:  # magic, format, seq, *term*
            assert found[0].seq == seq and found[0].term != 1
        else:
            assert found[0].seq == seq - 100
            assert _newest_image(directory) == (seq - 100, image)


def test_a_format_3_checkpoint_is_still_read(tmp_path: Path) -> None:
    """Files of the previous format (BLAKE2b digest) restore as before: an upgrade does not
    replay the whole journal once."""
    data = tmp_path / "data"
    _build(data, every=500, snapshot_after=None, total=1_200)
    newest = _files(data)[-1]
    raw = newest.read_bytes()
    magic, _fmt, seq, term, length, _crc = HEADER.unpack_from(raw)
    payload = raw[HEADER.size:]
    newest.write_bytes(HEADER_3.pack(magic, 3, seq, term, length,
                                     hashlib.blake2b(payload, digest_size=16).digest())
                       + payload)
    gw, restorer, node = _restart(data, restore=True)
    try:
        assert restorer is not None and restorer.base_seq == seq
        image = _image(gw)
    finally:
        node.close_offline()
    assert image == _reference(data)


def test_a_big_heap_is_backed_by_huge_pages_before_the_checkpoint_fork(
        tmp_path: Path, written: tuple[Path, bytes]) -> None:
    """Over the size limit the collapse (a thread) starts half way to a checkpoint; a fork
    that is due waits for it, then comes with a later batch, writes the same read model and
    records its pause; where MADV_COLLAPSE is not supported the next forks go ahead without
    trying again."""
    data, image = written
    found = Checkpoints(data / "api" / "readmodel").newest(0)
    assert found is not None
    rm = decode(found[1], found[0].seq, Engine)
    assert rm is not None
    periodic = PeriodicCheckpoints(Checkpoints(tmp_path / "rm"), 10, collapse_min_rss_mb=1)
    periodic.last_seq = found[0].seq
    periodic.after_batch(rm, found[0].seq + 4, found[0].term)
    assert periodic._collapsing is None  # not half way yet
    periodic.after_batch(rm, found[0].seq + 10, found[0].term)
    assert periodic._collapsing is not None and not periodic.pauses  # collapsing, no fork yet
    periodic._collapsing.join()
    periodic.after_batch(rm, found[0].seq + 11, found[0].term)
    periodic.close()
    assert len(periodic.collapses) == 1 and len(periodic.pauses) == 1 and periodic.written == 1
    assert _newest_image(tmp_path / "rm") == (found[0].seq + 11, image)
    if not periodic.collapses[0].supported:
        periodic.after_batch(rm, found[0].seq + 30, found[0].term)
        periodic.close()
        assert periodic._collapsing is None and periodic.written == 2


def test_a_collapse_still_running_a_whole_interval_later_does_not_hold_the_fork(
        tmp_path: Path, written: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    """The collapse runs at idle priority, so a loop that never waits starves it: the due
    checkpoint waits for it one more interval at most, then forks without it. The child that
    writes it runs at idle priority too."""
    data, image = written
    found = Checkpoints(data / "api" / "readmodel").newest(0)
    assert found is not None
    rm = decode(found[1], found[0].seq, Engine)
    assert rm is not None
    release = threading.Event()
    asked: list[bool] = []

    def starved(idle: bool = False) -> CollapseResult:
        asked.append(idle)
        release.wait(30)
        return CollapseResult(True, 0, 0, 0.0)

    monkeypatch.setattr(checkpoint_module, "collapse_heap", starved)
    policy_file = tmp_path / "policy"

    class Recording(Checkpoints):
        def write(self, rm: model.ReadModel, seq: int, term: int) -> Path:
            policy_file.write_text(f"{os.sched_getscheduler(0)} {_io_class()}")
            return super().write(rm, seq, term)

    periodic = PeriodicCheckpoints(Recording(tmp_path / "rm"), 10, collapse_min_rss_mb=1)
    seq, term = found[0].seq, found[0].term
    periodic.last_seq = seq
    periodic.after_batch(rm, seq + 5, term)  # half way: the collapse starts
    periodic.after_batch(rm, seq + 19, term)  # due, one short of a second interval: waits
    assert not periodic.pauses and asked == [True]
    periodic.after_batch(rm, seq + 20, term)  # a second interval: forks without it
    assert len(periodic.pauses) == 1
    release.set()
    periodic.close()
    assert periodic.written == 1 and _newest_image(tmp_path / "rm") == (seq + 20, image)
    cpu, io = policy_file.read_text().split()
    assert int(cpu) == os.SCHED_IDLE
    if io != "unknown":  # its disk writes queue behind the journal's (idle I/O class)
        assert int(io) == 3


def _io_class() -> str:
    """The calling thread's I/O priority class (Linux x86_64; else "unknown")."""
    import ctypes
    import platform

    if platform.machine() != "x86_64" or not sys.platform.startswith("linux"):
        return "unknown"
    value = ctypes.CDLL(None, use_errno=True).syscall(252, 1, 0)  # ioprio_get, this thread
    return "unknown" if value < 0 else str(value >> 13)


def test_a_checkpoint_is_synced_a_chunk_at_a_time(
        tmp_path: Path, written: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    """One flush of a whole checkpoint kept the disk busy for tens of ms, and the journal's
    synced appends queued behind it: the file is synced every ``SYNC_CHUNK`` bytes, and reads
    back the same."""
    data, image = written
    found = Checkpoints(data / "api" / "readmodel").newest(0)
    assert found is not None
    rm = decode(found[1], found[0].seq, Engine)
    assert rm is not None
    monkeypatch.setattr(checkpoint_module, "SYNC_CHUNK", 512)
    synced: list[int] = []
    real = os.fdatasync

    def counting(fd: int) -> None:
        synced.append(os.fstat(fd).st_size)
        real(fd)

    monkeypatch.setattr(checkpoint_module.os, "fdatasync", counting)
    path = Checkpoints(tmp_path / "rm").write(rm, found[0].seq, found[0].term)
    size = path.stat().st_size
    assert size > 4 * 512 and len(synced) >= size // 512
    assert all(b - a <= 512 for a, b in zip([0, *synced], synced, strict=False))
    assert _newest_image(tmp_path / "rm") == (found[0].seq, image)


def test_checkpoint_forks_are_spaced_in_time_as_well_as_in_commands(
        tmp_path: Path, written: tuple[Path, bytes]) -> None:
    """Each fork stops the loop for ms: under heavy load the command count alone forked every
    few seconds. With ``min_seconds`` a due checkpoint waits until that long after the last
    fork (or the start), then forks with the next batch; the server's default floor is 60 s."""
    from bastion.api.config import Settings

    assert Settings.from_env({}).readmodel_checkpoint_seconds == 60.0
    assert Settings.from_env({"BASTION_READMODEL_CHECKPOINT_SECONDS": "0"}
                             ).readmodel_checkpoint_seconds == 0.0
    data, image = written
    found = Checkpoints(data / "api" / "readmodel").newest(0)
    assert found is not None
    rm = decode(found[1], found[0].seq, Engine)
    assert rm is not None
    seq, term = found[0].seq, found[0].term
    periodic = PeriodicCheckpoints(Checkpoints(tmp_path / "rm"), 10, min_seconds=3600)
    periodic.last_seq = seq
    periodic.after_batch(rm, seq + 25, term)  # 2.5 intervals due, but not an hour after start
    assert not periodic.pauses
    periodic.last_at -= 3600
    periodic.after_batch(rm, seq + 26, term)
    periodic.close()
    assert len(periodic.pauses) == 1 and periodic.written == 1
    assert _newest_image(tmp_path / "rm") == (seq + 26, image)
    periodic.after_batch(rm, seq + 60, term)  # due again by count, the hour starts anew
    periodic.close()
    assert len(periodic.pauses) == 1 and periodic.written == 1


def test_the_server_forks_checkpoints_without_a_collapse_unless_asked(tmp_path: Path) -> None:
    """Each 2 MiB step of a collapse held the CPU for ~18 ms on a kernel without preemption
    in kernel code: a server's checkpoints skip it by default, a node's snapshots keep theirs."""
    from bastion.api.config import Settings

    assert Settings.from_env({}).readmodel_collapse_mb == 0
    assert Settings.from_env({"BASTION_READMODEL_COLLAPSE_MB": "64"}).readmodel_collapse_mb == 64

    async def run() -> list[int]:
        sizes = []
        for collapse in (0, None, 5):
            node = Node(tmp_path / str(collapse), config=NodeConfig(
                snapshot_every_commands=0, snapshot_every_seconds=0, progress=False,
                hugepage_collapse_min_rss_mb=64))
            await node.start()
            gw = Gateway(node)
            gw.attach(None, Checkpoints(tmp_path / f"rm{collapse}"), 10, collapse)
            assert gw.checkpointer is not None
            sizes.append(gw.checkpointer.collapse_min_rss // (1024 * 1024))
            await node.close()
            gw.detach()
        return sizes

    assert asyncio.run(run()) == [0, 64, 5]


def test_the_checkpoint_term_is_read_from_the_journal_unless_snapshot_and_end_agree(
        tmp_path: Path) -> None:
    """Terms never go back along the journal: when the node's snapshot (at or before the
    checkpoint) and the journal's end have the same term, so has the checkpoint's seq; when
    they differ (a rollback in between), the journal is read there."""
    restorer = Restorer(Checkpoints(tmp_path), prefetch=False)
    restorer.checkpoint = Checkpoint(tmp_path / "x.rmck", 50, 1)
    restorer.restored = model.ReadModel(Engine)
    restorer.base_seq, restorer.tail = 50, 50
    terms = {10: 1, 50: 1, 100: 1}
    asked: list[int] = []

    def term_at(seq: int) -> int:
        asked.append(seq)
        return terms[seq]

    assert restorer.usable(100, term_at, known=(10, 1)) is None and asked == [100]
    terms[50] = terms[100] = 2  # the journal was cut back before seq 50 and went on in term 2
    asked.clear()
    why = restorer.usable(100, term_at, known=(10, 1))
    assert why is not None and "another timeline" in why and asked == [100, 50]
    asked.clear()
    assert restorer.usable(100, term_at, known=None) is not None and asked == [50]
    assert restorer.usable(100, term_at, known=(60, 2)) is not None  # snapshot after it
