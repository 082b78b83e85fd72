"""The custody/chain simulator: the outside party a venue does not run, as a separate process
with fault injection (`bastion custody-sim --port P`).

HTTP API (JSON):
- ``POST /v1/withdrawals {key, reference, asset, address, amount}``: accept a send, idempotent
  on ``key`` (the same key returns the first send; the same key with other terms is 409);
  ``GET /v1/withdrawals/{key}?asset=``; ``POST /v1/withdrawals/query {asset, keys}`` (up to
  1000 keys: reconciliation and confirmation polling); ``GET /v1/withdrawals?asset=``.
  A send is ``pending`` until the next block, then ``confirmed`` (or ``failed`` when its
  address is on the blocked list: ``POST /blocked {address}``).
- ``POST /v1/addresses {asset, label}``: a stable deposit address; ``POST /v1/deposits
  {asset, address, amount}`` mints a deposit; ``GET /v1/deposits?asset=&since_height=`` lists
  deposits with their confirmations.
- ``POST /faults {mode, asset, delay_ms}``: ``ok | down | slow | crash_after_accept |
  duplicate_delivery`` for one asset or (``asset`` null) all; ``GET /faults``.
- ``GET /v1/ledger``: sends, replays absorbed, and ``double_sends`` (must stay empty).

Blocks are a clock: height = (now - genesis) // block_ms, so a restart keeps the chain.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bastion.custody.addresses import address_problem, derive_address
from bastion.custody.ledger import Minted, Send, SimLedger

MODES = ("ok", "down", "slow", "crash_after_accept", "duplicate_delivery")
CRASH_EXIT = 70
DEFAULT_ASSETS = ("BTC", "ETH", "USDT")
MAX_AMOUNT = 2**62
MAX_QUERY = 1000


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _err(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status)


class Simulator:
    """State and fault switches of one simulator process."""

    def __init__(self, data: Path, block_ms: int = 1000, assets: tuple[str, ...] = DEFAULT_ASSETS,
                 confirmations: int = 1) -> None:
        self.data = data
        self.block_ms = max(1, block_ms)
        self.assets = assets
        self.confirmations = confirmations
        self.ledger = SimLedger.open(data / "ledger.jsonl", _now_ms())
        self.faults: dict[str, dict[str, Any]] = {}
        self.blocked: set[str] = set()
        self.key_locks: dict[str, asyncio.Lock] = {}
        self._load_switches()

    # ------------------------------------------------------------------ switches (survive crashes)

    def _switch_path(self) -> Path:
        return self.data / "switches.json"

    def _load_switches(self) -> None:
        try:
            raw = json.loads(self._switch_path().read_text())
        except (OSError, json.JSONDecodeError):
            return
        self.faults = raw.get("faults", {})
        self.blocked = set(raw.get("blocked", []))

    def _save_switches(self) -> None:
        tmp = self._switch_path().with_suffix(".tmp")
        tmp.write_text(json.dumps({"faults": self.faults, "blocked": sorted(self.blocked)}))
        os.replace(tmp, self._switch_path())

    def fault_for(self, asset: str | None) -> dict[str, Any]:
        if asset and asset in self.faults:
            return self.faults[asset]
        return self.faults.get("*", {"mode": "ok"})

    # ------------------------------------------------------------------ chain

    def height(self) -> int:
        return (_now_ms() - self.ledger.genesis_ms) // self.block_ms

    def send_view(self, send: Send) -> dict[str, Any]:
        confs = max(0, self.height() - send.height)
        status = "pending"
        if confs >= self.confirmations:
            status = "failed" if send.failed else "confirmed"
        view = asdict(send)
        view.update(status=status, confirmations=confs)
        return view

    def deposit_view(self, m: Minted) -> dict[str, Any]:
        view = asdict(m)
        view["confirmations"] = max(0, self.height() - m.height)
        view["label"] = self.ledger.addresses.get(m.address, ("", ""))[1]
        return view


async def _json(request: Request) -> dict[str, Any] | None:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


def build_app(sim: Simulator) -> Starlette:
    """The simulator's HTTP app."""

    async def gate(asset: str | None) -> Response | None:
        """Apply the fault mode for `asset`: refuse when down, stall when slow."""
        fault = sim.fault_for(asset)
        if fault["mode"] == "down":
            return _err(503, "UNAVAILABLE", f"custody for {asset or 'all assets'} is down")
        if fault["mode"] == "slow":
            await asyncio.sleep(fault.get("delay_ms", 3000) / 1000)
        return None

    def bad_asset(asset: object) -> bool:
        return not isinstance(asset, str) or asset not in sim.assets

    async def submit(request: Request) -> Response:
        body = await _json(request)
        if body is None:
            return _err(400, "MALFORMED", "a JSON object body is required")
        asset = body.get("asset")
        if bad_asset(asset):
            return _err(400, "UNKNOWN_ASSET", f"unknown asset {asset!r}")
        assert isinstance(asset, str)
        refused = await gate(asset)
        if refused is not None:
            return refused
        key, ref, address, amount = (body.get(k) for k in ("key", "reference", "address",
                                                           "amount"))
        if not isinstance(key, str) or not 1 <= len(key) <= 128 or not isinstance(ref, str):
            return _err(400, "MALFORMED", "key and reference are required strings")
        if type(amount) is not int or not 0 < amount < MAX_AMOUNT:
            return _err(400, "INVALID_AMOUNT", "amount must be a positive integer")
        problem = address_problem(asset, address)
        if problem:
            return _err(400, "INVALID_ADDRESS", problem)
        assert isinstance(address, str)
        fault = sim.fault_for(asset)
        deliveries = 2 if fault["mode"] == "duplicate_delivery" else 1
        lock = sim.key_locks.setdefault(key, asyncio.Lock())
        async with lock:  # one key at a time; other keys' writes overlap (fsync in a thread)
            for _ in range(deliveries):
                existing = sim.ledger.sends.get(key)
                if existing is not None:
                    if (existing.asset, existing.address, existing.amount,
                            existing.reference) != (asset, address, amount, ref):
                        return _err(409, "KEY_REUSED", f"key {key} was used for another send")
                    sim.ledger.replays += 1
                    continue
                txid = hashlib.sha256(f"{key}:{sim.ledger.genesis_ms}".encode()).hexdigest()
                send = Send(key=key, reference=ref, asset=asset, address=address,
                            amount=amount, txid=txid, height=sim.height(),
                            accepted_ms=_now_ms(), failed="address blocked by the chain"
                            if address in sim.blocked else "")
                await asyncio.to_thread(sim.ledger.add_send, send)
                if fault["mode"] == "crash_after_accept":
                    os._exit(CRASH_EXIT)  # accepted durably, never answered
        sim.key_locks.pop(key, None)
        return JSONResponse(sim.send_view(sim.ledger.sends[key]))

    async def status(request: Request) -> Response:
        key = request.path_params["key"]
        send = sim.ledger.sends.get(key)
        refused = await gate(send.asset if send else request.query_params.get("asset"))
        if refused is not None:
            return refused
        if send is None:
            return _err(404, "NOT_FOUND", f"no send with key {key}")
        return JSONResponse(sim.send_view(send))

    async def query(request: Request) -> Response:
        body = await _json(request) or {}
        asset, keys = body.get("asset"), body.get("keys")
        if not isinstance(keys, list) or len(keys) > MAX_QUERY:
            return _err(400, "MALFORMED", f"keys must be a list of at most {MAX_QUERY}")
        refused = await gate(asset if isinstance(asset, str) else None)
        if refused is not None:
            return refused
        found = [sim.send_view(sim.ledger.sends[k]) for k in keys
                 if isinstance(k, str) and k in sim.ledger.sends]
        if sim.fault_for(asset)["mode"] == "duplicate_delivery":
            found = found + found
        return JSONResponse({"withdrawals": found, "height": sim.height()})

    async def list_sends(request: Request) -> Response:
        asset = request.query_params.get("asset")
        refused = await gate(asset)
        if refused is not None:
            return refused
        views = [sim.send_view(s) for s in sim.ledger.sends.values()
                 if asset is None or s.asset == asset]
        if sim.fault_for(asset)["mode"] == "duplicate_delivery":
            views = views + views
        return JSONResponse({"withdrawals": views, "height": sim.height()})

    async def new_address(request: Request) -> Response:
        body = await _json(request) or {}
        asset, label = body.get("asset"), body.get("label")
        if bad_asset(asset) or not isinstance(label, str) or not 0 < len(label) <= 64:
            return _err(400, "MALFORMED", "asset (known) and label (1-64 chars) are required")
        assert isinstance(asset, str)
        refused = await gate(asset)
        if refused is not None:
            return refused
        address = derive_address(asset, label)
        sim.ledger.add_address(address, asset, label)
        return JSONResponse({"asset": asset, "address": address, "label": label})

    async def mint(request: Request) -> Response:
        body = await _json(request) or {}
        asset, address, amount = body.get("asset"), body.get("address"), body.get("amount")
        if bad_asset(asset) or type(amount) is not int or not 0 < amount < MAX_AMOUNT:
            return _err(400, "MALFORMED", "asset (known) and a positive integer amount needed")
        assert isinstance(asset, str)
        if address not in sim.ledger.addresses:
            return _err(400, "UNKNOWN_ADDRESS", "mint only to addresses this custody issued")
        assert isinstance(address, str)
        n = len(sim.ledger.minted)
        txid = hashlib.sha256(f"mint:{n}:{sim.ledger.genesis_ms}".encode()).hexdigest()
        minted = Minted(txid=txid, asset=asset, address=address, amount=amount,
                        height=sim.height())
        sim.ledger.add_mint(minted)
        return JSONResponse(sim.deposit_view(minted))

    async def deposits(request: Request) -> Response:
        asset = request.query_params.get("asset")
        refused = await gate(asset)
        if refused is not None:
            return refused
        since = request.query_params.get("since_height", "0")
        floor = int(since) if since.isascii() and since.isdigit() and len(since) < 19 else 0
        views = [sim.deposit_view(m) for m in sim.ledger.minted.values()
                 if (asset is None or m.asset == asset) and m.height >= floor]
        if sim.fault_for(asset)["mode"] == "duplicate_delivery":
            views = views + views
        return JSONResponse({"deposits": views, "height": sim.height()})

    async def faults(request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse(sim.faults)
        body = await _json(request) or {}
        mode, asset = body.get("mode"), body.get("asset")
        if mode not in MODES or not (asset is None or isinstance(asset, str)):
            return _err(400, "MALFORMED", f"mode must be one of {', '.join(MODES)}")
        delay = body.get("delay_ms", 3000)
        if type(delay) is not int or not 0 <= delay <= 600_000:
            return _err(400, "MALFORMED", "delay_ms must be 0..600000")
        slot = asset or "*"
        if asset is None:
            sim.faults.clear()  # a global switch overrides every per-asset one
        if mode == "ok":
            sim.faults.pop(slot, None)
        else:
            sim.faults[slot] = {"mode": mode, "delay_ms": delay}
        sim._save_switches()
        return JSONResponse(sim.faults)

    async def blocked(request: Request) -> Response:
        body = await _json(request) or {}
        address = body.get("address")
        if not isinstance(address, str):
            return _err(400, "MALFORMED", "address is required")
        sim.blocked.add(address)
        sim._save_switches()
        return JSONResponse({"blocked": sorted(sim.blocked)})

    async def ledger(request: Request) -> Response:
        return JSONResponse({"sends": len(sim.ledger.sends), "replays": sim.ledger.replays,
                             "double_sends": sim.ledger.double_sends(),
                             "height": sim.height(),
                             "withdrawals": [sim.send_view(s)
                                             for s in sim.ledger.sends.values()]})

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True, "height": sim.height()})

    return Starlette(routes=[
        Route("/health", health),
        Route("/v1/withdrawals", submit, methods=["POST"]),
        Route("/v1/withdrawals", list_sends, methods=["GET"]),
        Route("/v1/withdrawals/query", query, methods=["POST"]),
        Route("/v1/withdrawals/{key}", status, methods=["GET"]),
        Route("/v1/addresses", new_address, methods=["POST"]),
        Route("/v1/deposits", mint, methods=["POST"]),
        Route("/v1/deposits", deposits, methods=["GET"]),
        Route("/faults", faults, methods=["GET", "POST"]),
        Route("/blocked", blocked, methods=["POST"]),
        Route("/v1/ledger", ledger),
    ])


def serve(port: int, data: Path, block_ms: int, host: str = "127.0.0.1") -> None:
    """Blocking: one simulator process (no supervision; see `supervise`)."""
    import uvicorn

    sim = Simulator(data, block_ms=block_ms)
    uvicorn.run(build_app(sim), host=host, port=port, log_level="warning", access_log=False)


def _find_prctl() -> Any:
    """libc's ``prctl``, resolved in the parent: a ``dlopen`` between fork and exec can hang on
    a loader lock another thread of a multi-threaded parent held at the fork."""
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _find_prctl()


def die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """For ``Popen(preexec_fn=...)``: the child gets SIGKILL when its parent dies (Linux
    PR_SET_PDEATHSIG), so a SIGKILLed node leaves no orphan simulator behind."""
    if _PRCTL is not None:
        _PRCTL(1, 9)  # PR_SET_PDEATHSIG, SIGKILL


def supervise(port: int, data: Path, block_ms: int, host: str = "127.0.0.1") -> int:
    """Run the simulator in a child process and restart it after a simulated crash (exit
    70, from ``crash_after_accept``), like a custody service's own process manager would."""
    import signal
    import subprocess
    import sys

    args = [sys.executable, "-m", "bastion.custody.sim", str(port), str(data), str(block_ms),
            host]
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, frame: object) -> None:
        if child is not None and child.poll() is None:
            child.send_signal(signum)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while True:
        child = subprocess.Popen(args, preexec_fn=die_with_parent)
        rc = child.wait()
        if rc != CRASH_EXIT:
            return rc
        time.sleep(0.2)


if __name__ == "__main__":
    import sys

    serve(int(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
