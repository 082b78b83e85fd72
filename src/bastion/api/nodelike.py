"""What the gateway needs from a node, as protocols instead of ``getattr`` probes.

``NodeLike`` is the surface every node offers (the embedded ``Node``, a cluster gateway's
remote node). What only some nodes can do is a capability of its own, checked by type:
``Snapshotting`` (final snapshot on shutdown), ``Stoppable`` (a node that shuts itself down,
snapshot included), ``Committing`` (a local group committer whose batches ``/metrics`` times).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from bastion.core import commands as C
from bastion.core import events as E
from bastion.core.engine import Engine
from bastion.journal.base import Committer

if TYPE_CHECKING:
    from bastion.api.security.keys import KeyStore


@runtime_checkable
class NodeLike(Protocol):
    @property
    def engine(self) -> Engine: ...

    @property
    def failure(self) -> BaseException | None: ...

    def pending_age(self) -> float: ...

    def subscribe(self, callback: Callable[[list[E.Event]], None]) -> Callable[[], None]: ...

    async def submit(self, cmd: C.Command) -> list[E.Event]: ...

    def submit_many(self, cmds: Sequence[C.Command]) -> Any: ...


@runtime_checkable
class Snapshotting(Protocol):
    async def snapshot(self) -> Any: ...

    async def close(self) -> None: ...


@runtime_checkable
class Stoppable(Protocol):
    async def stop(self) -> None: ...


@runtime_checkable
class SharingKeys(Protocol):
    """A node whose API keys live in a store shared with other gateways (a cluster's)."""

    async def share_keys(self, keys: KeyStore) -> None: ...


@runtime_checkable
class Committing(Protocol):
    @property
    def committer(self) -> Committer | None: ...
