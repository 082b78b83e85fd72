"""API keys: which account a key trades for, what it may do, and its secret encrypted at rest.

HMAC verification needs the plain secret, so it cannot be hashed like a password; it is kept
encrypted (AES-256-GCM, key id as associated data) under a server key that lives apart from the
key file (``BASTION_SERVER_KEY``, or a 0600 file generated in the data directory for the
embedded default). A copied ``keys.json`` alone reveals no secret.

Every change goes through one *writer*: the embedded default's writes the local file; a cluster
gateway's (``bastion.cluster.sharedkeys``) writes a replicated KV bucket first and applies the
change here only once it is stored there, so every gateway sees the same keys and a write the
bucket did not take changes nothing (``KeysUnavailableError``, HTTP 503).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bastion.api import errors as A
from bastion.api.errors import ApiError
from bastion.journal.fsutil import ensure_dir

PERMISSIONS = ("read", "trade", "withdraw")
KEY_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"

#: a key's stored form: secret encrypted (``secret_enc``), never the plain secret
Record = dict[str, object]
#: ``change(current) -> new`` (None: no such key / remove it)
Change = Callable[[Record | None], Record | None]
#: applies ``change`` to a key's current record where the keys are kept; returns (before, after)
Writer = Callable[[str, Change], Awaitable[tuple[Record | None, Record | None]]]


class KeysUnavailableError(ApiError):
    """The shared key store did not take a change: nothing changed, the caller may retry."""

    def __init__(self, message: str) -> None:
        super().__init__(A.UNAVAILABLE, message, headers={"Retry-After": "1"})


@dataclass(frozen=True)
class ApiKey:
    key: str
    account: int
    permissions: frozenset[str]
    label: str
    created_ms: int
    #: kept only in memory, decrypted at load
    secret: bytes


def _valid_key_text(text: str) -> bool:
    return 8 <= len(text) <= 128 and all(c in KEY_ALPHABET for c in text)


def private_dir(path: Path) -> None:
    """Create ``path`` durably and make it 0700: key material is for this user only."""
    ensure_dir(path)
    os.chmod(path, 0o700)


def load_server_key(data_dir: Path, configured: str | None) -> bytes:
    """The 32-byte key-encryption key: from configuration, else a generated 0600 file."""
    if configured:
        raw = bytes.fromhex(configured)
        if len(raw) != 32:
            raise ValueError("BASTION_SERVER_KEY must be 64 hex characters (32 bytes)")
        return raw
    private_dir(data_dir / "api")
    return server_key_file(data_dir / "api" / "server.key")


def server_key_file(path: Path) -> bytes:
    """The 32-byte key kept (hex) in ``path`` (its directory exists), made 0600 on first use."""
    if path.exists():
        os.chmod(path, 0o600)
        raw = bytes.fromhex(path.read_text().strip())
        if len(raw) != 32:
            raise ValueError(f"{path} does not hold a 32-byte hex key")
        return raw
    raw = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(raw.hex())
        f.flush()
        os.fsync(f.fileno())
    return raw


class KeyStore:
    """Keys in ``<data>/api/keys.json`` (atomically rewritten on change), secrets encrypted;
    or, once ``share``d, in memory as a replica of a shared store."""

    def __init__(self, path: Path | None, server_key: bytes) -> None:
        self.path = path
        self._server_key = server_key
        self._aead = AESGCM(server_key)
        self._keys: dict[str, ApiKey] = {}
        self._lock = threading.Lock()
        self._records: dict[str, Record] = {}
        self._watchers: list[Callable[[str, ApiKey | None], None]] = []
        self._writer: Writer = self._write_local
        if path is None:
            return
        private_dir(path.parent)
        if path.exists():
            os.chmod(path, 0o600)
            for rec in json.loads(path.read_text()).get("keys", []):
                self._records[rec["key"]] = rec
                self._keys[rec["key"]] = self._decode(rec)

    def share(self, writer: Writer) -> None:
        """From now on changes go through ``writer`` (a shared store that ``apply``s what it
        holds here); the local file is neither read nor written any more."""
        with self._lock:
            self.path = None
            self._records.clear()
            self._keys.clear()
        self._writer = writer

    def server_key_check(self) -> str:
        """A value that differs between server keys and reveals nothing of them: gateways that
        share a key store compare it before trusting each other's records."""
        return hmac.new(self._server_key, b"bastion api key store", hashlib.sha256).hexdigest()

    def _decode(self, rec: Record) -> ApiKey:
        key = str(rec["key"])
        blob = base64.b64decode(str(rec["secret_enc"]))
        try:
            secret = self._aead.decrypt(blob[:12], blob[12:], key.encode())
        except InvalidTag:
            raise ValueError(f"API key {key}: its secret does not decrypt with this server's "
                             f"key (BASTION_SERVER_KEY differs from the one it was made "
                             f"with)") from None
        perms = rec.get("permissions", [])
        assert isinstance(perms, list)
        account = rec["account"]
        assert isinstance(account, int)
        created = rec.get("created_ms", 0)
        return ApiKey(key=key, account=account, permissions=frozenset(perms),
                      label=str(rec.get("label", "")),
                      created_ms=created if isinstance(created, int) else 0, secret=secret)

    def watch(self, watcher: Callable[[str, ApiKey | None], None]) -> None:
        """``watcher(key_id, new_key_or_None)`` right after a key is replaced or revoked, here
        or (shared) on another gateway, so sessions opened with the old key (WebSockets) lose
        its rights at once."""
        self._watchers.append(watcher)

    def get(self, key: str) -> ApiKey | None:
        return self._keys.get(key)

    def record(self, key: str) -> Record | None:
        """The stored form (secret encrypted), as a shared store compares and replicates it."""
        return self._records.get(key)

    def for_account(self, account: int) -> list[ApiKey]:
        return [k for k in self._keys.values() if k.account == account]

    def apply(self, key: str, rec: Record | None) -> ApiKey | None:
        """Install (or with None remove) a stored record, from this store's writer or from a
        shared store; watchers hear of it unless it changes nothing a session relies on."""
        new = None if rec is None else self._decode(rec)
        with self._lock:
            old = self._keys.get(key)
            if new is None:
                if old is None and key not in self._records:
                    return None
                self._records.pop(key, None)
                self._keys.pop(key, None)
            else:
                self._records[key] = rec  # type: ignore[assignment]
                self._keys[key] = new
            if self.path is not None:
                self._save()
        if old is not None and (new is None or (new.account, new.permissions, new.secret)
                                != (old.account, old.permissions, old.secret)):
            for watcher in self._watchers:
                watcher(key, new)
        return new

    async def _write_local(self, key: str, change: Change
                           ) -> tuple[Record | None, Record | None]:
        before = self._records.get(key)
        after = change(before)
        if before is not None or after is not None:
            self.apply(key, after)
        return before, after

    async def put(self, account: int, permissions: frozenset[str], *, key: str | None = None,
                  secret: str | None = None, label: str = "") -> tuple[ApiKey, str]:
        """Create (or replace) a key; returns it with the plain secret, shown only once."""
        key = key or secrets.token_urlsafe(24)
        secret = secret or secrets.token_urlsafe(36)
        if not _valid_key_text(key) or not 8 <= len(secret) <= 256 or not secret.isprintable():
            raise ValueError("key must be 8-128 characters [A-Za-z0-9_-], secret 8-256 "
                             "printable characters")
        _check_permissions(permissions)
        nonce = secrets.token_bytes(12)
        blob = nonce + self._aead.encrypt(nonce, secret.encode(), key.encode())
        rec: Record = {
            "key": key, "account": account, "permissions": sorted(permissions),
            "label": label, "created_ms": int(time.time() * 1000),
            "secret_enc": base64.b64encode(blob).decode(),
        }
        await self._writer(key, lambda current: rec)
        return self._decode(rec), secret

    async def set_permissions(self, key: str, permissions: frozenset[str]) -> ApiKey | None:
        """Change what a key may do (same secret); None if there is no such key."""
        _check_permissions(permissions)
        _, after = await self._writer(key, lambda current: None if current is None else
                                      dict(current, permissions=sorted(permissions)))
        return None if after is None else self._decode(after)

    async def revoke(self, key: str) -> bool:
        before, _ = await self._writer(key, lambda current: None)
        return before is not None

    def _save(self) -> None:
        assert self.path is not None
        tmp = self.path.with_suffix(".tmp")
        data = json.dumps({"format": 1, "keys": list(self._records.values())}, indent=1)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _check_permissions(permissions: frozenset[str]) -> None:
    unknown = permissions - set(PERMISSIONS)
    if unknown:
        raise ValueError(f"unknown permissions {sorted(unknown)}")
