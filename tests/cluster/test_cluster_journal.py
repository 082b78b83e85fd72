"""The JetStream journal against a real 3-server NATS cluster: the fence (expected last
sequence and predecessor id), idempotent retries, pipelined group commit with a competing
writer, reading and locating seqs, and the replica's divergence alarm."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.cluster.natsproc import cluster_specs, start_cluster
from bastion.cluster.replica import Replica
from bastion.journal.errors import DurabilityError, FencedError
from bastion.journal.framing import Block
from bastion.journal.jetstream import JetStreamJournal, ensure_stream
from bastion.journal.natsloop import NatsLoop


@pytest.fixture(scope="module")
def nats_urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    specs = cluster_specs(tmp_path_factory.mktemp("nats"))
    servers = start_cluster(specs)
    try:
        yield [s.url for s in specs]
    finally:
        for server in servers:
            server.kill()


@pytest.fixture
def loop(nats_urls: list[str]) -> Iterator[NatsLoop]:
    nats = NatsLoop(nats_urls, connect_wait=20)
    try:
        yield nats
    finally:
        nats.close()


def _journal(loop: NatsLoop, name: str) -> JetStreamJournal:
    loop.run(ensure_stream(loop.js, name, f"{name.lower()}.log", 3))
    return JetStreamJournal(loop, name, f"{name.lower()}.log")


def test_append_read_locate_and_fence(loop: NatsLoop) -> None:
    j = _journal(loop, "T1")
    j.become_writer(5, j.tail)
    assert j.append([b"a", b"b"], 0) == 2
    assert j.append([b"c"], 2) == 3
    assert list(j.read(2)) == [(2, b"b"), (3, b"c")]
    assert j.term_at(3) == 5 and j.term_at(0) == 0
    with pytest.raises(FencedError):
        j.append([b"x"], 1)  # stale expected seq: refused, nothing written
    other = JetStreamJournal(loop, "T1", "t1.log")
    other.become_writer(9, other.tail)
    assert other.append([b"d"], 3) == 4  # a new writer takes over at the end
    with pytest.raises(FencedError):
        j.append([b"e"], 3)  # the deposed writer is refused by the stream itself
    assert [p for _, p in JetStreamJournal(loop, "T1", "t1.log").read(1)] == \
        [b"a", b"b", b"c", b"d"]


def test_retry_with_same_msg_id_is_deduplicated(loop: NatsLoop) -> None:
    j = _journal(loop, "T2")
    j.become_writer(1, j.tail)
    out = j.message([b"r1"], 1, 1, 0, 0)
    assert loop.run(j.publish_resolved(out, 0)) == "stored"
    # the ack was "lost": the same message is sent again
    assert loop.run(j.publish_resolved(out, 0)) == "stored"
    assert j.refresh().stream_seq == 1 and j.last_seq == 1


def test_pipelined_messages_never_land_after_another_writer(loop: NatsLoop) -> None:
    """Writer A pipelines 3 messages; writer B wrote first at A's position. None of A's may be
    stored, even the ones whose expected stream sequence B's message happens to satisfy."""
    j = _journal(loop, "T3")
    j.become_writer(1, j.tail)
    j.append([b"base"], 0)
    tail = j.tail
    b = JetStreamJournal(loop, "T3", "t3.log")
    b.become_writer(2, b.tail)
    b.append([b"B1"], 1)
    m1 = j.message([b"A1"], 2, 1, tail.stream_seq, tail.stream_seq)
    m2 = j.message([b"A2"], 3, 1, tail.stream_seq + 1, tail.stream_seq + 1)
    assert loop.run(j.publish_resolved(m1, tail.stream_seq)) == "fenced"
    # A2 expects stream seq 2 to be its own A1; B1 sits there, so it is refused every time
    # (it would be stored if only the stream-wide sequence number were checked)
    deadline = time.monotonic() + 2
    with pytest.raises(DurabilityError) as refused:
        loop.run(j.publish_resolved(m2, tail.stream_seq + 1,
                                    lambda: FencedError(0, 0) if time.monotonic() > deadline
                                    else None))
    assert refused.value.code == "UNRESOLVED"
    assert [p for _, p in b.read(1)] == [b"base", b"B1"]


def test_committer_batches_and_fences(loop: NatsLoop) -> None:
    j = _journal(loop, "T4")
    j.become_writer(3, j.tail)
    committer = j.committer(max_records=100)
    futures = [committer.submit([b"x%d" % i for i in range(7)], i * 7) for i in range(50)]
    assert [f.result(30) for f in futures] == [(i + 1) * 7 for i in range(50)]
    assert committer.records == 350 and committer.batches < 50
    rival = JetStreamJournal(loop, "T4", "t4.log")
    rival.become_writer(4, rival.tail)
    rival.append([b"rival"], 350)
    late = committer.submit([b"late"], 350)
    with pytest.raises(FencedError):
        late.result(30)
    assert [p for _, p in rival.read(350)] == [b"x6", b"rival"]


def test_replica_raises_alarm_on_hash_mismatch(tmp_path: Path) -> None:
    from bastion.core.codec import encode_command
    from bastion.demo import demo_setup, stamp

    cmds = stamp(demo_setup())
    replica = Replica()
    block = Block(1, 1, 0, 0, [encode_command(c) for c in cmds])
    replica.apply_block(1, block, checkpoint=True)
    seq = replica.seq
    replica.leader_checkpoint(seq, replica.engine.state_hash())
    assert replica.checked == 1 and replica.diverged is None
    replica.hashes[seq] = "0" * 64  # as if this replica had applied something else
    replica.leader_hashes.clear()
    replica.leader_checkpoint(seq, replica.engine.state_hash())
    assert replica.diverged and "mismatch" in replica.diverged
