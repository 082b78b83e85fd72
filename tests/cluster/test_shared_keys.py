"""The shared key store on a real 3-server NATS cluster, two ``KeyStore``s standing in for two
gateways: a permission change sent with a stale view of a key revoked elsewhere does not bring
it back (compare-and-set on the revision), and a gateway whose watch died still applies a revoke
by the periodic re-read of the bucket."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bastion.api.security.keys import KeyStore
from bastion.cluster.natsproc import cluster_specs, start_cluster
from bastion.cluster.sharedkeys import SharedKeys
from bastion.journal.natsloop import NatsLoop


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[str]]:
    specs = cluster_specs(tmp_path)
    running = start_cluster(specs)
    try:
        yield [s.url for s in specs]
    finally:
        for server in running:
            server.stop()


async def _until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "not reached in time"
        await asyncio.sleep(0.02)


def test_stale_change_and_dead_watch(servers: list[str]) -> None:
    server_key = secrets.token_bytes(32)
    loops = [NatsLoop(servers, name=f"test-gw-{i}") for i in (1, 2)]

    async def go() -> None:
        stores = [KeyStore(None, server_key) for _ in loops]
        shared = [SharedKeys(n, "bastion_test_keys", 3, resync_every=0.5) for n in loops]
        for store, sk in zip(stores, shared, strict=True):
            await sk.attach(store)
        a, b = stores
        heard: list[tuple[str, object]] = []
        b.watch(lambda key, new: heard.append((key, new)))

        k1, _ = await a.put(7, frozenset({"read", "trade"}))
        k2, _ = await a.put(8, frozenset({"read", "trade"}))
        await _until(lambda: b.get(k1.key) is not None and b.get(k2.key) is not None)

        # gateway 2's watch dies; gateway 1 revokes k1 and narrows k2
        loops[1].call_soon(shared[1].records._tasks[0].cancel)
        await asyncio.sleep(0.2)
        assert await a.revoke(k1.key)
        assert await a.set_permissions(k2.key, frozenset({"read"})) is not None
        # gateway 2 still holds k1 (stale): widening it must not bring it back
        assert b.get(k1.key) is not None
        assert await b.set_permissions(k1.key, frozenset({"read", "trade", "withdraw"})) is None
        assert a.get(k1.key) is None and b.get(k1.key) is None
        assert (k1.key, None) in heard, heard  # its WebSockets would close
        # and the re-read brought k2's narrowing too
        await _until(lambda: (k := b.get(k2.key)) is not None and k.permissions == {"read"})
        assert await b.set_permissions(k2.key, frozenset({"trade", "read"})) is not None
        await _until(lambda: (k := a.get(k2.key)) is not None and "trade" in k.permissions)
        for sk in shared:
            await sk.close()

    try:
        asyncio.run(go())
    finally:
        for n in loops:
            n.close()
