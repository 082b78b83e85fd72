"""Binance user-data-stream listen keys: which API key a listenKey streams for, and when it
expires.

Binance's rules, kept here: creating a listenKey while the API key already has a live one on
that surface answers the same listenKey and extends it; a keepalive (``PUT``) extends it by the
validity (60 minutes); ``DELETE`` closes it; an expired or closed listenKey streams nothing and
its connections get a ``listenKeyExpired`` event, then close. Revoking the API key ends its
listen keys at once (``revoke``). Listen keys live in memory only: like Binance's, they do not
survive a restart, and clients create a fresh one when their stream drops.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from bastion.api.security.auth import wall_ms

Surface = Literal["spot", "futures"]

VALIDITY_MS = 60 * 60 * 1000
#: listen keys per API key and surface (Binance allows one; a few leave room for reconnects)
MAX_PER_KEY = 1
#: listen keys in total, so a flood of API keys cannot grow memory without bound
MAX_TOTAL = 100_000


@dataclass
class ListenKey:
    listen_key: str
    api_key: str
    account: int
    surface: Surface
    expires_ms: int


class ListenKeyError(Exception):
    """A listenKey that does not exist (or no longer): Binance answers -1125."""


class ListenKeys:
    def __init__(self, validity_ms: int = VALIDITY_MS,
                 clock: Callable[[], int] = wall_ms) -> None:
        assert validity_ms > 0
        self.validity_ms = validity_ms
        self.clock = clock
        self._by_key: dict[str, ListenKey] = {}
        self._closers: list[Callable[[ListenKey], None]] = []

    def on_close(self, closer: Callable[[ListenKey], None]) -> None:
        """``closer(entry)`` runs when a listenKey is deleted, expires or is revoked."""
        self._closers.append(closer)

    def create(self, api_key: str, account: int, surface: Surface) -> ListenKey:
        now = self.clock()
        for lk in self._by_key.values():
            if lk.api_key == api_key and lk.surface == surface and lk.expires_ms > now:
                lk.expires_ms = now + self.validity_ms
                return lk
        self.sweep()
        if len(self._by_key) >= MAX_TOTAL:
            raise ListenKeyError("too many listen keys on this server; close unused ones")
        lk = ListenKey(secrets.token_urlsafe(48)[:64], api_key, account, surface,
                       now + self.validity_ms)
        self._by_key[lk.listen_key] = lk
        return lk

    def live(self, listen_key: str, surface: Surface | None = None) -> ListenKey | None:
        lk = self._by_key.get(listen_key)
        if lk is None or (surface is not None and lk.surface != surface):
            return None
        if lk.expires_ms <= self.clock():
            self._end(lk)
            return None
        return lk

    def keepalive(self, api_key: str, listen_key: str | None, surface: Surface) -> ListenKey:
        """Extend a live listenKey of this API key (futures may omit the listenKey: the key's
        own one is meant)."""
        lk = self._owned(api_key, listen_key, surface)
        lk.expires_ms = self.clock() + self.validity_ms
        return lk

    def close(self, api_key: str, listen_key: str | None, surface: Surface) -> None:
        self._end(self._owned(api_key, listen_key, surface))

    def revoke(self, api_key: str) -> int:
        """End every listenKey of an API key (the key was revoked): returns how many."""
        gone = [lk for lk in self._by_key.values() if lk.api_key == api_key]
        for lk in gone:
            self._end(lk)
        return len(gone)

    def sweep(self) -> int:
        """End expired listen keys (their connections get ``listenKeyExpired``)."""
        now = self.clock()
        gone = [lk for lk in self._by_key.values() if lk.expires_ms <= now]
        for lk in gone:
            self._end(lk)
        return len(gone)

    def _owned(self, api_key: str, listen_key: str | None, surface: Surface) -> ListenKey:
        if listen_key is None:
            for lk in self._by_key.values():
                if lk.api_key == api_key and lk.surface == surface:
                    listen_key = lk.listen_key
                    break
        found = self.live(listen_key or "", surface)
        if found is None or found.api_key != api_key:
            raise ListenKeyError("This listenKey does not exist.")
        return found

    def _end(self, lk: ListenKey) -> None:
        if self._by_key.pop(lk.listen_key, None) is None:
            return
        for closer in self._closers:
            closer(lk)

    def __len__(self) -> int:
        return len(self._by_key)
