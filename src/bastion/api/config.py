"""Gateway settings, read once from the environment so scripted runs and tests override them
without touching code (``BASTION_*`` variables; see docs/trading-api.md)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

_N = TypeVar("_N", int, float)


class SettingError(ValueError):
    """A ``BASTION_*`` variable that does not parse: the server refuses to start, naming it."""


def _num(env: dict[str, str], name: str, default: _N, kind: Callable[[str], _N]) -> _N:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        return kind(raw)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise SettingError(f"{name}={raw!r} is not {what}") from None


def _rate(env: dict[str, str], name: str) -> tuple[float, float]:
    """``"rate/burst"`` (per second) or ``"rate"`` (burst = 2 x rate); ``0`` disables."""
    text = env[name]
    try:
        if "/" in text:
            rate, burst = text.split("/", 1)
            return float(rate), float(burst)
        return float(text), 2 * float(text)
    except ValueError:
        raise SettingError(f"{name}={text!r} is not 'rate/burst' or 'rate' "
                           "(per second)") from None


def load_settings() -> Settings:
    """The process's settings from its environment; a variable that does not parse stops the
    start with ``error: BAD_SETTING: ...`` and exit status 1, not a traceback."""
    try:
        return Settings.from_env()
    except SettingError as exc:
        raise SystemExit(f"error: BAD_SETTING: {exc}") from None


def _flag(env: dict[str, str], name: str) -> bool:
    """An opt-in switch: on for any value but empty, ``0``, ``false`` or ``no``."""
    return env.get(name, "0") not in ("0", "false", "no", "")


@dataclass
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = field(default_factory=lambda: Path("data"))
    demo_key: str | None = None
    demo_secret: str | None = None
    demo_account: int = 1
    admin_token: str | None = None
    #: 32-byte key (hex) encrypting API secrets at rest; generated into the data dir if unset.
    server_key: str | None = None
    #: per API key and per client IP: (requests per second, burst); 0 disables.
    key_rate: tuple[float, float] = (200.0, 400.0)
    ip_rate: tuple[float, float] = (500.0, 1000.0)
    max_body: int = 64 * 1024
    max_ws_message: int = 64 * 1024
    #: WebSocket limits: open sockets per client IP; unsent bytes per socket before the
    #: client is dropped as a slow consumer
    ws_per_ip: int = 64
    ws_max_channels: int = 100
    #: per WebSocket, frames other than order entry (which the per-key limit covers):
    #: (frames per second, burst); a frame costs 1 + its size / 4 KiB. Over it, the socket is
    #: not read until the budget refills
    ws_msg_rate: tuple[float, float] = (50.0, 100.0)
    #: connection limits (``bastion.api.security.protocol``): seconds to complete a request's headers,
    #: connections per IP that have not completed one, requests + connections server-wide
    #: before 503, and seconds an idle kept-alive connection stays open
    header_timeout: float = 10.0
    pending_per_ip: int = 256
    max_concurrency: int = 4096
    keep_alive: float = 5.0
    #: webhook deliveries refuse private/loopback/link-local addresses except these CIDRs
    webhook_allow: str = ""
    ws_send_buffer: int = 1024 * 1024
    #: the kernel's send buffer for each WebSocket (bytes; 0 leaves it to autotuning)
    ws_socket_buffer: int = 256 * 1024
    #: and its receive buffer, bounding what one read hands the parser (0: autotuned; pinning
    #: it small cost ~60% more CPU per pipelined WebSocket order, measured)
    ws_socket_rcvbuf: int = 0
    recv_window_default: int = 5_000
    recv_window_max: int = 60_000
    #: a forked child checkpoints the read model every this many commands between node
    #: snapshots (0: only with node snapshots), so a restart follows at most this long a tail
    readmodel_checkpoint_every: int = 100_000
    #: and at least this many seconds apart (0: no floor): each fork stops the loop 8-15 ms,
    #: so under heavy load "every 100,000" would stall order entry every few seconds
    readmodel_checkpoint_seconds: float = 60.0
    #: collapse the heap into huge pages before such a checkpoint's fork above this many MiB
    #: (0: never). Off: on this kernel (no preemption in kernel code) each 2 MiB step of the
    #: collapse held the server's CPU and the mm's lock for ~18 ms, so the loop stalled
    #: for seconds in ~20 ms pieces, while the fork it shortens pauses the loop ~5-10 ms once
    readmodel_collapse_mb: int = 0
    #: Binance user-data listen keys expire this long after creation or the last keepalive
    listen_key_ttl_ms: int = 60 * 60 * 1000
    demo: bool = True
    #: demo oracle (bastion.feeds.demo) for perpetuals: seconds between updates (0: off)
    feeder_interval: float = 1.0
    feeder_start_price: int = 5_000_000
    health_interval: float = 1.0
    #: seconds between health log lines (a failure or a stall is logged at once)
    health_log_interval: float = 60.0
    #: seconds between full garbage collections (see ``server.serve``)
    full_gc_interval: float = 60.0
    log_level: str = "info"
    #: uvicorn WebSocket implementation (measured: see docs/trading-api.md)
    ws_impl: str = "websockets-sansio"
    #: journal group-commit wait (s) and the interpreter's GIL switch interval (s): latency knobs
    group_delay: float = 0.0
    switch_interval: float = 0.0005
    #: lock pages in memory once touched (``bastion.node.memlock``), so reclaim never makes
    #: order entry wait for a page read back from disk
    mlock: bool = False
    #: the journal writer thread never preempts the event loop (``SCHED_BATCH``): fewer
    #: context switches when both share a CPU, slower GIL hand-offs when the loop never waits
    writer_yields: bool = False

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        e = dict(os.environ if env is None else env)
        s = cls()
        s.host = e.get("BASTION_HTTP_HOST", s.host)
        s.port = _num(e, "BASTION_HTTP_PORT", s.port, int)
        s.data_dir = Path(e.get("BASTION_DATA", str(s.data_dir)))
        s.demo_key = e.get("BASTION_DEMO_KEY") or None
        s.demo_secret = e.get("BASTION_DEMO_SECRET") or None
        s.admin_token = e.get("BASTION_ADMIN_TOKEN") or None
        s.server_key = e.get("BASTION_SERVER_KEY") or None
        if "BASTION_RATE_KEY" in e:
            s.key_rate = _rate(e, "BASTION_RATE_KEY")
        if "BASTION_RATE_IP" in e:
            s.ip_rate = _rate(e, "BASTION_RATE_IP")
        s.max_body = _num(e, "BASTION_MAX_BODY", s.max_body, int)
        s.ws_per_ip = _num(e, "BASTION_WS_PER_IP", s.ws_per_ip, int)
        s.ws_max_channels = _num(e, "BASTION_WS_MAX_CHANNELS", s.ws_max_channels, int)
        if "BASTION_WS_MSG_RATE" in e:
            s.ws_msg_rate = _rate(e, "BASTION_WS_MSG_RATE")
        s.header_timeout = _num(e, "BASTION_HEADER_TIMEOUT", s.header_timeout, float)
        s.pending_per_ip = _num(e, "BASTION_PENDING_PER_IP", s.pending_per_ip, int)
        s.max_concurrency = _num(e, "BASTION_MAX_CONCURRENCY", s.max_concurrency, int)
        s.keep_alive = _num(e, "BASTION_KEEP_ALIVE", s.keep_alive, float)
        s.webhook_allow = e.get("BASTION_WEBHOOK_ALLOW", s.webhook_allow)
        s.ws_send_buffer = _num(e, "BASTION_WS_SEND_BUFFER", s.ws_send_buffer, int)
        s.ws_socket_buffer = _num(e, "BASTION_WS_SOCKET_BUFFER", s.ws_socket_buffer, int)
        s.listen_key_ttl_ms = _num(e, "BASTION_LISTEN_KEY_TTL_MS", s.listen_key_ttl_ms, int)
        s.ws_socket_rcvbuf = _num(e, "BASTION_WS_SOCKET_RCVBUF", s.ws_socket_rcvbuf, int)
        s.readmodel_checkpoint_every = _num(e, "BASTION_READMODEL_CHECKPOINT_EVERY", s.readmodel_checkpoint_every, int)
        s.readmodel_checkpoint_seconds = _num(e, "BASTION_READMODEL_CHECKPOINT_SECONDS", s.readmodel_checkpoint_seconds, float)
        s.readmodel_collapse_mb = _num(e, "BASTION_READMODEL_COLLAPSE_MB", s.readmodel_collapse_mb, int)
        s.demo = e.get("BASTION_DEMO", "1") not in ("0", "false", "no")
        s.feeder_interval = _num(e, "BASTION_FEEDER_INTERVAL", s.feeder_interval, float)
        s.full_gc_interval = _num(e, "BASTION_FULL_GC_INTERVAL", s.full_gc_interval, float)
        s.health_interval = _num(e, "BASTION_HEALTH_INTERVAL", s.health_interval, float)
        s.health_log_interval = _num(e, "BASTION_HEALTH_LOG_INTERVAL", s.health_log_interval, float)
        s.log_level = e.get("BASTION_LOG_LEVEL", s.log_level)
        s.ws_impl = e.get("BASTION_WS_IMPL", s.ws_impl)
        s.group_delay = _num(e, "BASTION_GROUP_DELAY", s.group_delay, float)
        s.switch_interval = _num(e, "BASTION_SWITCH_INTERVAL", s.switch_interval, float)
        s.mlock = _flag(e, "BASTION_MLOCK")
        s.writer_yields = _flag(e, "BASTION_WRITER_YIELDS")
        return s
