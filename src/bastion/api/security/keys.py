"""API keys: which account a key trades for, what it may do, and its secret encrypted at rest.

HMAC verification needs the plain secret, so it cannot be hashed like a password; it is kept
encrypted (AES-256-GCM, key id as associated data) under a server key that lives apart from the
key file (``BASTION_SERVER_KEY``, or a 0600 file generated in the data directory for the
embedded default). A copied ``keys.json`` alone reveals no secret.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bastion.journal.fsutil import ensure_dir

PERMISSIONS = ("read", "trade", "withdraw")
KEY_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"


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
    path = data_dir / "api" / "server.key"
    private_dir(path.parent)
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
    """Keys in ``<data>/api/keys.json`` (atomically rewritten on change), secrets encrypted."""

    def __init__(self, path: Path, server_key: bytes) -> None:
        self.path = path
        self._aead = AESGCM(server_key)
        self._keys: dict[str, ApiKey] = {}
        self._lock = threading.Lock()
        self._records: dict[str, dict[str, object]] = {}
        self._watchers: list[Callable[[str, ApiKey | None], None]] = []
        private_dir(path.parent)
        if path.exists():
            os.chmod(path, 0o600)
            for rec in json.loads(path.read_text()).get("keys", []):
                self._records[rec["key"]] = rec
                self._keys[rec["key"]] = self._decode(rec)

    def _decode(self, rec: dict[str, object]) -> ApiKey:
        key = str(rec["key"])
        blob = base64.b64decode(str(rec["secret_enc"]))
        secret = self._aead.decrypt(blob[:12], blob[12:], key.encode())
        perms = rec.get("permissions", [])
        assert isinstance(perms, list)
        account = rec["account"]
        assert isinstance(account, int)
        created = rec.get("created_ms", 0)
        return ApiKey(key=key, account=account, permissions=frozenset(perms),
                      label=str(rec.get("label", "")),
                      created_ms=created if isinstance(created, int) else 0, secret=secret)

    def watch(self, watcher: Callable[[str, ApiKey | None], None]) -> None:
        """``watcher(key_id, new_key_or_None)`` right after a key is replaced or revoked, so
        sessions opened with the old key (WebSockets) lose its rights at once."""
        self._watchers.append(watcher)

    def _changed(self, key: str, new: ApiKey | None) -> None:
        for watcher in self._watchers:
            watcher(key, new)

    def get(self, key: str) -> ApiKey | None:
        return self._keys.get(key)

    def for_account(self, account: int) -> list[ApiKey]:
        return [k for k in self._keys.values() if k.account == account]

    def put(self, account: int, permissions: frozenset[str], *, key: str | None = None,
            secret: str | None = None, label: str = "") -> tuple[ApiKey, str]:
        """Create (or replace) a key; returns it with the plain secret, shown only once."""
        key = key or secrets.token_urlsafe(24)
        secret = secret or secrets.token_urlsafe(36)
        if not _valid_key_text(key) or not 8 <= len(secret) <= 256 or not secret.isprintable():
            raise ValueError("key must be 8-128 characters [A-Za-z0-9_-], secret 8-256 "
                             "printable characters")
        unknown = permissions - set(PERMISSIONS)
        if unknown:
            raise ValueError(f"unknown permissions {sorted(unknown)}")
        nonce = secrets.token_bytes(12)
        blob = nonce + self._aead.encrypt(nonce, secret.encode(), key.encode())
        rec: dict[str, object] = {
            "key": key, "account": account, "permissions": sorted(permissions),
            "label": label, "created_ms": int(time.time() * 1000),
            "secret_enc": base64.b64encode(blob).decode(),
        }
        with self._lock:
            replaced = key in self._records
            self._records[key] = rec
            self._save()
            api_key = self._keys[key] = self._decode(rec)
        if replaced:
            self._changed(key, api_key)
        return api_key, secret

    def set_permissions(self, key: str, permissions: frozenset[str]) -> ApiKey | None:
        """Change what a key may do (same secret); None if there is no such key."""
        unknown = permissions - set(PERMISSIONS)
        if unknown:
            raise ValueError(f"unknown permissions {sorted(unknown)}")
        with self._lock:
            rec = self._records.get(key)
            if rec is None:
                return None
            rec = dict(rec, permissions=sorted(permissions))
            self._records[key] = rec
            self._save()
            api_key = self._keys[key] = self._decode(rec)
        self._changed(key, api_key)
        return api_key

    def revoke(self, key: str) -> bool:
        with self._lock:
            if key not in self._records:
                return False
            del self._records[key]
            self._keys.pop(key, None)
            self._save()
        self._changed(key, None)
        return True

    def _save(self) -> None:
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
