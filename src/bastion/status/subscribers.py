"""Webhook subscribers: who gets which status changes, and how their deliveries went."""

from __future__ import annotations

import copy
import secrets

from bastion.status.board import StatusBoard, new_id
from bastion.status.errors import StatusError
from bastion.status.model import Change, Subscriber


class Subscribers:
    """The subscriber registry on the board's store; the dispatcher reads it and reports back."""

    def __init__(self, board: StatusBoard) -> None:
        self.board = board

    @property
    def _subs(self) -> dict[str, Subscriber]:
        return self.board.subscribers

    def add(
        self, url: str, component_ids: list[str] | None = None, secret: str | None = None
    ) -> Subscriber:
        """Register a webhook; the secret signs every payload and is shown only here."""
        with self.board.tx():
            ids = None if component_ids is None else self.board.component_ids(component_ids)
            if secret is not None and not (16 <= len(secret) <= 256):
                raise StatusError("invalid_secret", "secret must be 16-256 characters", 422)
            sub = Subscriber(
                id=new_id(),
                url=url,
                secret=secret or secrets.token_hex(32),
                component_ids=ids,
                created_ms=self.board.clock(),
            )
            self._subs[sub.id] = sub
            self.board.store.put_subscriber(sub)
            self.board.mark("subscriber", sub.id)
            return copy.deepcopy(sub)

    def list(self) -> list[Subscriber]:
        with self.board.lock:
            return copy.deepcopy(list(self._subs.values()))

    def _get(self, sub_id: str) -> Subscriber:
        sub = self._subs.get(sub_id)
        if sub is None:
            raise StatusError("subscriber_not_found", f"no subscriber with id {sub_id!r}", 404)
        return sub

    def remove(self, sub_id: str) -> None:
        with self.board.tx():
            self._get(sub_id)
            del self._subs[sub_id]
            self.board.store.delete_subscriber(sub_id)
            self.board.mark("subscriber", sub_id)

    def set_enabled(self, sub_id: str, enabled: bool, reason: str = "") -> Subscriber:
        """Enable (operator) or disable (dispatcher, after repeated failures) a subscriber."""
        with self.board.tx():
            sub = self._get(sub_id)
            sub.enabled = enabled
            sub.disabled_ms = None if enabled else self.board.clock()
            sub.disabled_reason = "" if enabled else reason
            if enabled:
                sub.failed_attempts = 0
            self.board.store.put_subscriber(sub)
            self.board.mark("subscriber", sub.id)
            self.board.emit(Change(
                id=new_id(), kind="subscriber.enabled" if enabled else "subscriber.disabled",
                at_ms=self.board.clock(), component_ids=[], subscriber=copy.deepcopy(sub),
                reason=reason,
            ))
            return copy.deepcopy(sub)

    def record_delivery(self, sub_id: str, ok: bool) -> None:
        """Count a delivery attempt; only failures are persisted (successes are kept in memory)."""
        with self.board.lock:
            sub = self._subs.get(sub_id)
            if sub is None:
                return
            if ok:
                sub.delivered += 1
                return
            sub.failed_attempts += 1
            self.board.store.put_subscriber(sub)
