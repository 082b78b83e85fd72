"""Read-model checkpoints (issue 11): written by the node's snapshot child and, between
snapshots, by the gateway's own child; a restart restores the newest usable one plus the
commands after it, and a damaged, foreign-timeline or beyond-the-end checkpoint falls back
(to an older checkpoint, or to replaying the journal) with the same read model."""

from __future__ import annotations

import asyncio
import logging
import struct
from pathlib import Path

import msgspec
import pytest

from bastion.api.read import model
from bastion.api.read.checkpoint import HEADER, Checkpoints, Restorer, _export
from bastion.api.service.gateway import Gateway
from bastion.core import commands as C
from bastion.demo import BTC_USDT, demo_setup
from bastion.node import Node, NodeConfig

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
        side = "buy" if k % 2 else "sell"
        price = MID + (k * 7) % 11 - 5
        cmds.append(C.PlaceOrder(account=account, market=BTC_USDT, side=side, price=price,
                                 qty=1_000 + k % 3 * 1_000,
                                 client_id=f"c{k % 40}" if k % 3 == 0 else ""))
    return cmds


@pytest.fixture(autouse=True)
def _small_caps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Caps a short workload exceeds, so evicting old history is part of every test."""
    monkeypatch.setattr(model, "CLOSED_PER_ACCOUNT", 60)
    monkeypatch.setattr(model, "FILLS_PER_ACCOUNT", 90)


def _config() -> NodeConfig:
    return NodeConfig(snapshot_every_commands=0, snapshot_every_seconds=0, progress=False)


def _build(directory: Path, every: int, snapshot_after: int | None, total: int) -> str:
    """Journal ``total`` order commands through a node with a gateway writing checkpoints;
    returns the node's state hash."""

    async def run() -> str:
        node = Node(directory, config=_config())
        await node.start()
        gw = Gateway(node)
        gw.attach(None, Checkpoints(directory / "api" / "readmodel"), every)
        await node.submit_many(demo_setup(list(range(1, ACCOUNTS + 1))))
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


def test_checkpoint_from_another_timeline_or_beyond_the_end_is_not_used(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "data"
    _build(data, every=500, snapshot_after=None, total=1_200)
    newest = _files(data)[-1]
    caplog.set_level(logging.WARNING, logger="bastion.api")
    _set_term(newest, 7)  # digest covers the payload only: the header still checks out
    gw, restorer, node = _restart(data, restore=True)
    try:
        assert restorer is not None and restorer.checkpoint is not None
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
