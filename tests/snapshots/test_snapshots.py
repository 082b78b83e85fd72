"""Snapshot files: atomic write, checksums, lookup, retention, leftovers of dead writers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bastion.journal.errors import DurabilityError
from bastion.snapshots import SnapshotCorruptError, SnapshotStore


def put(store: SnapshotStore, seq: int, name: str = "auto", body: bytes | None = None) -> Path:
    payload = body if body is not None else f"state@{seq}".encode() * 50
    info = store.write(
        seq=seq, term=1, state_hash=f"h{seq}", payload=payload, created_ms=1000 + seq, name=name
    )
    return info.path


def test_write_read_roundtrip_is_atomic(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "snapshots")
    path = put(store, 42, body=b"payload" * 1000)
    assert path.name == "00000000000000000042-auto.snap"
    assert sorted(os.listdir(tmp_path / "snapshots")) == [path.name]
    [info] = store.entries()
    header, payload = store.read(info)
    assert (header.seq, header.term, header.state_hash, header.name) == (42, 1, "h42", "auto")
    assert payload == b"payload" * 1000 and header.payload_len == 7000
    assert info.id == "00000000000000000042-auto" and not info.named


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b[:-10], "payload is"),
        (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "payload checksum mismatch"),
        (lambda b: b[:20] + bytes([b[20] ^ 1]) + b[21:], "header checksum mismatch"),
        (lambda b: b"NOTASNAP" + b[8:], "bad magic"),
        (lambda b: b[:5], "bad magic"),
    ],
)
def test_damage_is_detected_and_skipped(tmp_path: Path, damage: object, message: str) -> None:
    store = SnapshotStore(tmp_path)
    put(store, 10)
    newest = put(store, 20)
    newest.write_bytes(damage(newest.read_bytes()))  # type: ignore[operator]
    with pytest.raises(SnapshotCorruptError, match=message) as err:
        store.read(store.entries()[-1])
    assert err.value.code == "SNAPSHOT_CORRUPT"
    found = store.newest_valid()
    assert found is not None and found[0].seq == 10


def test_newest_valid_respects_max_seq_and_accept(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    for seq in (5, 10, 15):
        put(store, seq)
    found = store.newest_valid(max_seq=12)
    assert found is not None and found[0].seq == 10
    found = store.newest_valid(accept=lambda i, h, p: "wrong timeline" if i.seq > 5 else None)
    assert found is not None and found[0].seq == 5
    assert store.newest_valid(max_seq=4) is None


def test_find_by_name_or_id_and_clean_errors(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    put(store, 7)
    put(store, 9, name="pre-maintenance")
    assert store.find("pre-maintenance").seq == 9
    assert store.find("00000000000000000007-auto").seq == 7
    with pytest.raises(DurabilityError) as err:
        store.find("nope")
    assert err.value.code == "UNKNOWN_SNAPSHOT" and "pre-maintenance" in err.value.message
    with pytest.raises(DurabilityError) as err2:
        put(store, 12, name="pre-maintenance")
    assert err2.value.code == "SNAPSHOT_EXISTS"
    with pytest.raises(DurabilityError) as err3:
        put(store, 12, name="../evil")
    assert err3.value.code == "BAD_SNAPSHOT_NAME"


def test_retention_keeps_last_n_and_named(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    for seq in range(1, 8):
        put(store, seq * 10)
    put(store, 15, name="pre-maintenance")
    removed = store.retain(3)
    assert [i.seq for i in removed] == [10, 20, 30, 40]
    assert [(i.seq, i.name) for i in store.entries()] == [
        (15, "pre-maintenance"),
        (50, "auto"),
        (60, "auto"),
        (70, "auto"),
    ]


def test_cleanup_removes_only_dead_writers_tmp(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    put(store, 1)
    dead = tmp_path / "00000000000000000002-auto.snap.tmp-999999999"
    live = tmp_path / f"00000000000000000003-auto.snap.tmp-{os.getpid()}"
    dead.write_bytes(b"half")
    live.write_bytes(b"half")
    assert store.cleanup_tmp() == 1
    assert not dead.exists() and live.exists()
    assert [i.seq for i in store.entries()] == [1]
