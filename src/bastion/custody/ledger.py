"""The custody simulator's own durable ledger: every accepted withdrawal (each is one chain
send), every minted deposit, every deposit address. One JSON object per line, fsynced before
the simulator answers, so a crash right after accepting (the ``crash_after_accept`` fault)
keeps the send, and a restarted simulator remembers what it already did. A double send by the
exchange shows up as two sends with the same ``reference`` (withdrawal id)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Send:
    key: str
    reference: str
    asset: str
    address: str
    amount: int
    txid: str
    height: int
    accepted_ms: int
    failed: str = ""


@dataclass
class Minted:
    txid: str
    asset: str
    address: str
    amount: int
    height: int


@dataclass
class SimLedger:
    path: Path
    genesis_ms: int = 0
    sends: dict[str, Send] = field(default_factory=dict)
    minted: dict[str, Minted] = field(default_factory=dict)
    addresses: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: submit requests seen again for a key already accepted (retries, duplicate deliveries)
    replays: int = 0

    @classmethod
    def open(cls, path: Path, now_ms: int) -> SimLedger:
        ledger = cls(path)
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn last line from a crash: that write was never answered
                ledger._load(rec)
        if ledger.genesis_ms == 0:
            ledger.genesis_ms = now_ms
            ledger._append({"kind": "genesis", "ms": now_ms})
        return ledger

    def _load(self, rec: dict[str, Any]) -> None:
        kind = rec.pop("kind")
        if kind == "genesis":
            self.genesis_ms = rec["ms"]
        elif kind == "send":
            send = Send(**rec)
            self.sends[send.key] = send
        elif kind == "mint":
            self.minted[rec["txid"]] = Minted(**rec)
        elif kind == "address":
            self.addresses[rec["address"]] = (rec["asset"], rec["label"])

    def _append(self, rec: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec, separators=(",", ":")) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def add_send(self, send: Send) -> None:
        self._append({"kind": "send", **asdict(send)})
        self.sends[send.key] = send

    def add_mint(self, minted: Minted) -> None:
        self._append({"kind": "mint", **asdict(minted)})
        self.minted[minted.txid] = minted

    def add_address(self, address: str, asset: str, label: str) -> None:
        if address not in self.addresses:
            self._append({"kind": "address", "address": address, "asset": asset,
                          "label": label})
            self.addresses[address] = (asset, label)

    def double_sends(self) -> dict[str, int]:
        """References (withdrawal ids) sent more than once: must always be empty."""
        counts: dict[str, int] = {}
        for send in self.sends.values():
            if not send.failed:
                counts[send.reference] = counts.get(send.reference, 0) + 1
        return {ref: n for ref, n in counts.items() if n > 1}
