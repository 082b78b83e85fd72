"""WebSocket API (``/v1/ws``): public market data, private streams after auth, order entry.

Protocol (JSON text frames):
- ``{"op":"subscribe","channels":["book.BTC-USDT","trades.BTC-USDT","ticker.BTC-USDT","modes"]}``
  and, after ``{"op":"auth","key":K,"timestamp":T,"signature":hex HMAC(secret, T+"GET/v1/ws")}``,
  the private ``orders``, ``fills``, ``balances``, ``positions``.
- ``book.M``: a ``snapshot`` (full L2, ``seq``) then ``delta`` messages with ``seq`` and
  ``prev_seq``; a delta whose ``prev_seq`` is not your last ``seq`` means you missed one:
  resubscribe for a fresh snapshot.
- Order entry: ``{"op":"place"|"amend"|"cancel"|"cancel_all","id":N,"args":{...}}`` with the
  REST bodies as ``args``; answered ``{"id":N,"ok":true,"result":...}`` once durable, or
  ``{"id":N,"ok":false,"error":{"code","message"}}``.

Limits (each a stable error or close code, and a log line): a connection's unsent messages are
bounded in bytes (``BASTION_WS_SEND_BUFFER``): a consumer that cannot keep up is closed with
1008 and resyncs from a fresh snapshot; subscriptions are de-duplicated and capped per frame
(``MAX_CHANNELS_PER_FRAME``) and per connection (``BASTION_WS_MAX_CHANNELS``); frames other
than order entry are budgeted per connection (``BASTION_WS_MSG_RATE``: over it the socket is
not read until the budget refills, so a flood costs what the budget allows, and one that keeps
the budget's full pace for another burst's worth of frames is closed with 1008; a ``subscribe`` also
pays for the snapshot bytes it queues, and a book snapshot is rendered once per book change and
shared by every subscriber until the book moves); connections per IP
are capped (``BASTION_WS_PER_IP``); a frame nested too deeply closes with 1007. Revoking a key
closes its sockets at once; changing its permissions applies to its open sockets at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket

from bastion import acktrace
from bastion.api import errors as A
from bastion.api.app_context import Context
from bastion.api.convert import to_units
from bastion.api.errors import ApiError
from bastion.api.http import decode
from bastion.api.native import perps
from bastion.api.native import schemas as S
from bastion.api.native import views as V
from bastion.api.native.routes import place_command, position_views, ticker_view
from bastion.api.security.auth import require
from bastion.api.security.keys import ApiKey
from bastion.api.security.ratelimit import Limiter
from bastion.api.service.eager import start_eagerly
from bastion.api.ws.marketdata import BookMirror
from bastion.api.ws.protocol import STOP, FrameSink
from bastion.core import errors as X
from bastion.core import events as E
from bastion.core.state import Market

log = logging.getLogger("bastion.api.ws")

WS_PATH = "/v1/ws"
MAX_INFLIGHT = 4_096
MAX_CHANNELS_PER_FRAME = 50
#: unsent bytes at which a connection counts as falling behind (its kernel buffer is pinned)
PIN_AT = 64 * 1024
#: bytes the writer hands the socket in one write at most
WRITE_BATCH = 64 * 1024
#: seconds a slow consumer gets to take its close frame before the socket is aborted
CLOSE_GRACE = 2.0
#: close codes: policy (slow consumer, limits, revoked key) and invalid payload (nesting)
POLICY, INVALID = 1008, 1007
TICKER_INTERVAL = 0.1
PRIVATE = ("orders", "fills", "balances", "positions")

_enc = msgspec.json.Encoder()


class Op(msgspec.Struct, forbid_unknown_fields=False):
    op: str
    id: int | str | None = None
    channels: list[str] = []
    args: msgspec.Raw = msgspec.Raw(b"{}")
    key: str = ""
    timestamp: int | str = ""
    signature: str = ""


class CancelArgs(msgspec.Struct, forbid_unknown_fields=True):
    order_id: int | None = None
    client_order_id: str | None = None


class AmendArgs(msgspec.Struct, forbid_unknown_fields=True):
    order_id: int
    price: S.Decimal | None = None
    quantity: S.Decimal | None = None


class CancelAllArgs(msgspec.Struct, forbid_unknown_fields=True):
    market: str | None = None


_op_decoder = msgspec.json.Decoder(Op)


class Conn:
    """One socket: its key, its subscriptions and its outgoing messages, bounded in bytes."""

    __slots__ = ("buffered", "closed", "closer", "flush_due", "holding", "inflight", "ip",
                 "key", "limit", "out", "out_size", "pin", "queue", "subs", "write_now",
                 "writer_task", "ws")

    def __init__(self, ws: WebSocket, limit: int) -> None:
        self.ws = ws
        self.key: ApiKey | None = None
        self.subs: set[str] = set()
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        #: bytes queued and not yet handed to the transport
        self.buffered = 0
        self.limit = limit
        self.inflight = 0
        self.closed = False
        self.closer: asyncio.Task[None] | None = None
        self.writer_task: asyncio.Task[None] | None = None
        #: messages for one write at the end of this loop turn (``flush``), and their bytes
        self.out: list[bytes] = []
        self.out_size = 0
        self.flush_due = False
        #: whether the writer task has a batch in hand (then ``flush`` queues behind it)
        self.holding = False
        #: the protocol's synchronous write (``api.ws.protocol.write_texts``), if any
        self.write_now: Callable[[list[bytes]], bool] | None = \
            ws.scope.get("bastion.write_texts")
        #: pins the kernel send buffer (``app._buffer_pin``) once this client falls behind
        self.pin: Callable[[], None] | None = ws.scope.get("bastion.pin_sndbuf")
        client = ws.client
        self.ip = client.host if client else "?"

    def send(self, data: bytes) -> None:
        if self.closed:
            return
        self.buffered += len(data)
        if self.buffered > PIN_AT and self.pin is not None:
            self.pin()
            self.pin = None
        if self.buffered > self.limit:
            self.close(POLICY, f"slow consumer: more than {self.limit} bytes unsent; "
                               "resubscribe for a fresh snapshot")
            return
        if self.write_now is None:
            self.queue.put_nowait(data)
            return
        self.out.append(data)
        self.out_size += len(data)
        if not self.flush_due:
            self.flush_due = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """What this loop turn queued (the acks one fsync released, stream messages) in one
        write, from a callback, not a task; if the socket is not taking data now, the writer
        task sends it when it is, in order."""
        self.flush_due = False
        out, size = self.out, self.out_size
        if not out or self.closed:
            return
        self.out, self.out_size = [], 0
        assert self.write_now is not None
        if not self.holding and self.queue.empty() and self.write_now(out):
            self.buffered -= size
            return
        for data in out:
            self.queue.put_nowait(data)

    def close(self, code: int, reason: str) -> None:
        """Stop serving this socket now; the close frame goes out from a task of its own,
        so a client that stopped reading holds neither the caller nor the loop."""
        if self.closed:
            return
        self.closed = True
        log.warning("closing WebSocket from %s (key %s) with %d: %s", self.ip,
                    self.key.key if self.key else "-", code, reason)
        self.closer = asyncio.ensure_future(self._close(code, reason[:120]))

    async def _close(self, code: int, reason: str) -> None:
        writer = self.writer_task
        if writer is not None:
            writer.cancel()
            with contextlib.suppress(BaseException):
                await writer
        try:
            await asyncio.wait_for(self.ws.close(code, reason), CLOSE_GRACE)
        except Exception:
            abort = self.ws.scope.get("bastion.abort")
            if abort is not None:
                abort()

    async def writer(self) -> None:
        """Sends what is queued; everything queued by the time it runs goes out in one write
        when the server offers ``bastion.send_texts`` (``api.ws.protocol``)."""
        q = self.queue
        send_texts: Callable[[list[bytes]], Awaitable[None]] | None = \
            self.ws.scope.get("bastion.send_texts")
        try:
            if send_texts is None:
                send = self.ws.send
                while True:
                    data = await q.get()
                    await send({"type": "websocket.send", "text": data.decode()})
                    self.buffered -= len(data)
            while True:
                batch = [await q.get()]
                self.holding = True
                size = len(batch[0])
                while not q.empty() and size < WRITE_BATCH:
                    data = q.get_nowait()
                    batch.append(data)
                    size += len(data)
                await send_texts(batch)
                self.holding = False
                self.buffered -= size
        except Exception:
            self.closed = True


class Hub:
    """Subscriptions and fan-out. ``publish`` runs synchronously in the node's event callback,
    so a book snapshot taken on subscribe is always followed by exactly the later deltas."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.channels: dict[str, set[Conn]] = defaultdict(set)
        self.private: dict[int, set[Conn]] = defaultdict(set)
        self.dirty_tickers: set[str] = set()
        self._ticker_task: asyncio.Task[None] | None = None
        #: open sockets per client IP and per API key (limits, revocation)
        self.per_ip: dict[str, int] = defaultdict(int)
        self.by_key: dict[str, set[Conn]] = defaultdict(set)
        #: market -> (mirror, its version, rendered snapshot): subscribers between two book
        #: changes share one render (a re-subscribe flood otherwise re-renders 200 levels each)
        self._book_snapshots: dict[str, tuple[BookMirror, int, bytes]] = {}
        self.snapshot_renders = 0
        ctx.keys.watch(self.key_changed)

    # ------------------------------------------------------------ sessions

    def admit(self, ip: str) -> bool:
        """Count a new socket from ``ip``; False if that IP already has its maximum."""
        if self.per_ip[ip] >= self.ctx.settings.ws_per_ip:
            return False
        self.per_ip[ip] += 1
        return True

    def release(self, ip: str) -> None:
        left = self.per_ip[ip] - 1
        if left > 0:
            self.per_ip[ip] = left
        else:
            self.per_ip.pop(ip, None)

    def login(self, conn: Conn, key: ApiKey) -> None:
        conn.key = key
        self.by_key[key.key].add(conn)

    def key_changed(self, key_id: str, new: ApiKey | None) -> None:
        """A revoked key closes its sockets; a changed key applies to them at once (a key
        that lost ``read`` loses its private streams, one that lost ``trade`` its orders)."""
        for conn in list(self.by_key.get(key_id, ())):
            old = conn.key
            if new is None or old is None or new.account != old.account:
                self._forget_key(conn)
                conn.close(POLICY, "API key revoked")
                continue
            conn.key = new
            if "read" not in new.permissions:
                for channel in PRIVATE:
                    if channel in conn.subs:
                        self.unsubscribe(conn, channel)

    def _forget_key(self, conn: Conn) -> None:
        key = conn.key
        if key is None:
            return
        subs = self.private.get(key.account)
        if subs is not None:
            subs.discard(conn)
            if not subs:
                del self.private[key.account]
        for channel in PRIVATE:
            conn.subs.discard(channel)
        conns = self.by_key.get(key.key)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self.by_key[key.key]
        conn.key = None

    def start(self) -> None:
        self._ticker_task = asyncio.create_task(self._tickers())

    async def stop(self) -> None:
        if self._ticker_task is not None:
            self._ticker_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker_task

    # ------------------------------------------------------------ subscriptions

    def subscribe(self, conn: Conn, channel: str) -> None:
        gw = self.ctx.gateway
        if channel in PRIVATE:
            if conn.key is None:
                raise ApiError(A.UNAUTHORIZED, f"channel {channel!r} needs auth first")
            require(conn.key, "read")
            conn.subs.add(channel)
            self.private[conn.key.account].add(conn)
            if channel == "balances":
                conn.send(_enc.encode({"channel": "balances", "data":
                                       V.balances(gw.engine, conn.key.account)}))
            elif channel == "positions":
                conn.send(_enc.encode({"channel": "positions", "data": {
                    "positions": position_views(self.ctx, conn.key.account),
                    "margin": perps.margins(self.ctx, conn.key.account)}}))
            return
        if channel == "modes":
            conn.subs.add(channel)
            self.channels[channel].add(conn)
            e = gw.engine
            conn.send(_enc.encode({"channel": "modes", "type": "snapshot", "data": [
                {"market": m.market, "mode": m.mode, "reason": m.mode_reason,
                 "until_ts": m.mode_until} for _, m in sorted(e.markets.items())]}))
            return
        kind, _, market = channel.partition(".")
        if kind not in ("book", "trades", "ticker"):
            raise ApiError(A.MALFORMED_REQUEST, f"unknown channel {channel!r}")
        mkt = gw.market(market)
        conn.subs.add(channel)
        self.channels[channel].add(conn)
        if kind == "book":
            mirror = gw.books.mirror(mkt.market)
            if mirror is None:
                gw.books.load(gw.engine)
                mirror = gw.books.mirror(mkt.market)
            assert mirror is not None
            conn.send(self._book_snapshot(mkt, mirror))
        elif kind == "ticker":
            conn.send(_enc.encode({"channel": channel,
                                   "data": ticker_view(self.ctx, mkt.market)}))

    def _book_snapshot(self, mkt: Market, mirror: BookMirror) -> bytes:
        cached = self._book_snapshots.get(mkt.market)
        if cached is not None and cached[0] is mirror and cached[1] == mirror.version:
            return cached[2]
        u = V.Units(self.ctx.gateway.engine, mkt)
        bids, asks = mirror.snapshot()
        data = _enc.encode({
            "channel": "book." + mkt.market, "type": "snapshot", "market": mkt.market,
            "seq": mirror.seq,
            "bids": [(u.price(p), u.qty(q)) for p, q in bids],
            "asks": [(u.price(p), u.qty(q)) for p, q in asks]})
        self._book_snapshots[mkt.market] = (mirror, mirror.version, data)
        self.snapshot_renders += 1
        return data

    def unsubscribe(self, conn: Conn, channel: str) -> None:
        conn.subs.discard(channel)
        if channel in PRIVATE:
            if conn.key is not None and not any(c in conn.subs for c in PRIVATE):
                self.private[conn.key.account].discard(conn)
        else:
            self.channels[channel].discard(conn)

    def subscribe_all(self, conn: Conn, channels: list[str]) -> None:
        """One ``subscribe`` frame: de-duplicated, capped per frame and per connection, and
        checked as a whole before any snapshot is sent."""
        if len(channels) > MAX_CHANNELS_PER_FRAME:
            raise ApiError(A.TOO_MANY_SUBSCRIPTIONS, f"at most {MAX_CHANNELS_PER_FRAME} "
                                                     "channels per subscribe frame")
        wanted = list(dict.fromkeys(channels))
        cap = self.ctx.settings.ws_max_channels
        if len(conn.subs | set(wanted)) > cap:
            raise ApiError(A.TOO_MANY_SUBSCRIPTIONS, f"at most {cap} channels per "
                                                     "connection")
        for ch in wanted:
            if not isinstance(ch, str) or len(ch) > 64:
                raise ApiError(A.MALFORMED_REQUEST, "a channel is a name such as "
                                                    "\"book.BTC-USDT\"")
        for ch in wanted:
            self.subscribe(conn, ch)

    def drop(self, conn: Conn) -> None:
        for channel in list(conn.subs):
            self.unsubscribe(conn, channel)
        self._forget_key(conn)

    # ------------------------------------------------------------ publishing

    def publish(self, events: list[E.Event], deltas: list[Any]) -> None:
        gw = self.ctx.gateway
        engine = gw.engine
        channels = self.channels
        for market, prev_seq, seq, bids, asks in deltas:
            self.dirty_tickers.add(market)
            subs = channels.get("book." + market)
            if subs:
                u = V.units(engine, market)
                data = _enc.encode({
                    "channel": "book." + market, "type": "delta", "market": market, "seq": seq,
                    "prev_seq": prev_seq, "bids": [(u.price(p), u.qty(q)) for p, q in bids],
                    "asks": [(u.price(p), u.qty(q)) for p, q in asks]})
                for c in subs:
                    c.send(data)
        private = self.private
        trades: dict[str, list[E.Trade]] = {}
        orders: dict[int, set[int]] = {}
        fills: dict[int, list[tuple[int, int]]] = {}
        for ev in events:
            t = type(ev)
            if t is E.Trade:
                assert isinstance(ev, E.Trade)
                trades.setdefault(ev.market, []).append(ev)
                self.dirty_tickers.add(ev.market)
                if private:
                    for acct, oid in ((ev.maker_account, ev.maker_order),
                                      (ev.taker_account, ev.taker_order)):
                        if acct in private:
                            orders.setdefault(acct, set()).add(oid)
                            fills.setdefault(acct, []).append((ev.trade_id, oid))
            elif t is E.ModeChanged:
                assert isinstance(ev, E.ModeChanged)
                subs = channels.get("modes")
                if subs:
                    data = _enc.encode({"channel": "modes", "type": "update", "data": {
                        "market": ev.market, "old": ev.old, "new": ev.new, "reason": ev.reason,
                        "until_ts": ev.until_ts, "seq": ev.seq, "ts": ev.ts}})
                    for c in subs:
                        c.send(data)
            elif private and (t is E.OrderAccepted or t is E.OrderCanceled
                              or t is E.OrderAmended):
                acct = ev.account  # type: ignore[attr-defined]
                if acct in private:
                    orders.setdefault(acct, set()).add(ev.order_id)  # type: ignore[attr-defined]
        for market, batch in trades.items():
            subs = channels.get("trades." + market)
            if subs:
                u = V.units(engine, market)
                data = _enc.encode({"channel": "trades." + market, "data": [
                    S.PublicTrade(trade_id=t.trade_id, market=market, price=u.price(t.price),
                                  quantity=u.qty(t.qty), taker_side=t.taker_side, ts=t.ts)
                    for t in batch]})
                for c in subs:
                    c.send(data)
        if private:
            self._private(orders, fills, gw.readmodel.touched_accounts,
                          gw.readmodel.touched_positions)

    def _private(self, orders: dict[int, set[int]], fills: dict[int, list[tuple[int, int]]],
                 touched: set[int], positions: set[int]) -> None:
        gw = self.ctx.gateway
        engine = gw.engine
        rm = gw.readmodel
        for acct, conns in self.private.items():
            if acct in orders:
                msgs = []
                for oid in sorted(orders[acct]):
                    rec = rm.orders.get(oid)
                    if rec is not None:
                        msgs.append(_enc.encode({"channel": "orders", "data": V.order(
                            V.units(engine, rec.market), rec)}))
                for c in conns:
                    if "orders" in c.subs:
                        for m in msgs:
                            c.send(m)
            if acct in fills:
                wanted = set(fills[acct])
                view = rm.accounts.get(acct)
                recent = [f for f in list(view.fills)[-len(wanted) * 2:]
                          if (f.trade_id, f.order_id) in wanted] if view else []
                msgs = [_enc.encode({"channel": "fills", "data": V.fill(
                    V.units(engine, f.market), f)}) for f in recent]
                for c in conns:
                    if "fills" in c.subs:
                        for m in msgs:
                            c.send(m)
            if acct in touched:
                data = _enc.encode({"channel": "balances", "data": V.balances(engine, acct)})
                for c in conns:
                    if "balances" in c.subs:
                        c.send(data)
            if acct in positions:
                data = _enc.encode({"channel": "positions", "data": {
                    "positions": position_views(self.ctx, acct),
                    "margin": perps.margins(self.ctx, acct)}})
                for c in conns:
                    if "positions" in c.subs:
                        c.send(data)

    async def _tickers(self) -> None:
        while True:
            await asyncio.sleep(TICKER_INTERVAL)
            dirty, self.dirty_tickers = self.dirty_tickers, set()
            for market in dirty:
                subs = self.channels.get("ticker." + market)
                if subs and market in self.ctx.gateway.engine.markets:
                    data = _enc.encode({"channel": "ticker." + market,
                                        "data": ticker_view(self.ctx, market)})
                    for c in subs:
                        c.send(data)


# ---------------------------------------------------------------- connection handling

def _reply(conn: Conn, rid: Any, result: Any) -> None:
    conn.send(_enc.encode({"id": rid, "ok": True, "result": result}))


def _fail(conn: Conn, rid: Any, err: ApiError) -> None:
    conn.send(_enc.encode({"id": rid, "ok": False, "status": err.status,
                           "error": {"code": err.code, "message": err.message,
                                     **err.detail()}}))


def routes(ctx: Context, hub: Hub) -> list[BaseRoute]:
    gw = ctx.gateway
    auth = ctx.auth
    frames = Limiter("per-WebSocket frame", *ctx.settings.ws_msg_rate)
    trace = acktrace.TRACE

    async def order_op(conn: Conn, op: Op) -> None:
        rid = op.id
        try:
            key = conn.key
            if key is None:
                raise ApiError(A.UNAUTHORIZED, "authenticate first: {\"op\":\"auth\",...}")
            require(key, "trade")
            ctx.key_limiter.hit(key.key)
            account = key.account
            e = gw.engine
            if op.op == "place":
                req = decode(op.args, S.PlaceOrder)
                rec, dup, _ = await gw.place(place_command(e, account, req))
                _reply(conn, rid, V.order(V.units(gw.engine, rec.market), rec, dup))
            elif op.op == "cancel":
                c = decode(op.args, CancelArgs)
                if c.order_id is None and not c.client_order_id:
                    raise ApiError(A.MALFORMED_REQUEST, "give order_id or client_order_id")
                done = await gw.cancel(account, c.order_id, c.client_order_id)
                _reply(conn, rid, V.order(V.units(gw.engine, done.order.market), done.order))
            elif op.op == "amend":
                a = decode(op.args, AmendArgs)
                rec = gw.own_order(account, order_id=a.order_id)
                u = V.units(e, rec.market)
                price = None if a.price is None else to_units(a.price, u.price_dp,
                                                              X.INVALID_PRICE, "price")
                qty = None if a.quantity is None else to_units(a.quantity, u.base_dp,
                                                               X.INVALID_QUANTITY, "quantity")
                if price is None and qty is None:
                    raise ApiError(X.NO_CHANGE, "give a new price and/or quantity")
                done = await gw.amend(account, a.order_id, None, price, qty)
                _reply(conn, rid, V.order(u, done.order))
            else:
                ca = decode(op.args, CancelAllArgs)
                all_done = await gw.cancel_all(account, ca.market)
                _reply(conn, rid, S.CancelAllResult(canceled=[
                    V.order(V.units(gw.engine, r.market), r) for r in all_done.orders]))
        except ApiError as err:
            _fail(conn, rid, err)
        except msgspec.ValidationError as exc:
            _fail(conn, rid, ApiError(A.MALFORMED_REQUEST, f"invalid args: {exc}"))
        except Exception:
            log.exception("websocket order op failed")
            _fail(conn, rid, ApiError(X.INTERNAL_ERROR, "internal error"))
        finally:
            conn.inflight -= 1

    def handle(conn: Conn, raw: str | bytes) -> int:
        """Act on one frame; returns its cost against the connection's frame budget (order
        entry is free here: the per-key limit covers it)."""
        cost = 1 + len(raw) // 4096
        if trace is not None:
            trace.received = acktrace.now()
        try:
            op = _op_decoder.decode(raw)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            _fail(conn, None, ApiError(A.MALFORMED_REQUEST, f"bad message: {str(exc)[:200]}"))
            return cost
        except RecursionError:
            conn.close(INVALID, "JSON nested too deeply")
            return cost
        rid = op.id
        try:
            if op.op in ("place", "cancel", "amend", "cancel_all"):
                if conn.inflight >= MAX_INFLIGHT:
                    raise ApiError(A.RATE_LIMITED, f"more than {MAX_INFLIGHT} requests in "
                                                   "flight on this connection")
                conn.inflight += 1
                start_eagerly(order_op(conn, op))  # to its journal wait, in this callback
                return 0
            elif op.op == "subscribe":
                ctx.ip_limiter.hit(conn.ip)  # a snapshot per subscribe: not free to spam
                if not op.channels:
                    raise ApiError(A.MALFORMED_REQUEST, "give channels")
                queued = conn.buffered
                hub.subscribe_all(conn, op.channels)
                # the snapshots it queued are paid for like inbound bytes: re-subscribing
                # for fresh snapshots costs what they cost to send
                cost += max(0, conn.buffered - queued) // 4096
                _reply(conn, rid, {"subscribed": sorted(conn.subs)})
            elif op.op == "unsubscribe":
                for ch in op.channels[:MAX_CHANNELS_PER_FRAME]:
                    hub.unsubscribe(conn, ch)
                _reply(conn, rid, {"subscribed": sorted(conn.subs)})
            elif op.op == "auth":
                ctx.ip_limiter.hit(conn.ip)
                ts = str(op.timestamp)
                key = auth.verify(op.key, ts, op.signature, f"{ts}GET{WS_PATH}".encode())
                if conn.key is not None and conn.key.key != key.key:
                    raise ApiError(A.FORBIDDEN, "this connection is already authenticated "
                                                "with another key")
                hub.login(conn, key)
                _reply(conn, rid, {"account": key.account,
                                   "permissions": sorted(key.permissions)})
            elif op.op == "ping":
                ctx.ip_limiter.hit(conn.ip)
                _reply(conn, rid, {"pong": True})
            else:
                raise ApiError(A.MALFORMED_REQUEST, f"unknown op {op.op[:40]!r}")
        except ApiError as err:
            _fail(conn, rid, err)
        return cost

    async def endpoint(ws: WebSocket) -> None:
        ip = ws.client.host if ws.client else "?"
        if not hub.admit(ip):
            log.warning("refusing WebSocket from %s: %d connections already open", ip,
                        ctx.settings.ws_per_ip)
            await ws.accept()
            await ws.close(POLICY, f"too many WebSocket connections from your address "
                                   f"(max {ctx.settings.ws_per_ip})")
            return
        try:
            await serve(ws)
        finally:
            hub.release(ip)

    def frame_sink(conn: Conn) -> FrameSink:
        """The connection's handler of one message: acts on it and answers the seconds the
        socket must not be read (its frame budget), ``STOP`` once the connection closes."""
        who = str(id(conn))
        over = 0

        def on_frame(raw: str | bytes) -> float:
            nonlocal over
            if conn.closed:
                return STOP
            try:
                cost = handle(conn, raw)
            except Exception:
                log.exception("WebSocket from %s failed", conn.ip)
                conn.close(1011, "internal error")
                return STOP
            if not cost:
                over = 0
                return 0.0
            wait = frames.pause(who, cost)
            over = over + 1 if wait else 0
            if over > frames.burst:
                # still sending at the budget's full rate a burst's worth of frames after
                # its burst ran out: a flood, not a client catching up (Binance closes at
                # 5 frames/s); the client reconnects and resubscribes
                conn.close(POLICY, f"more than {frames.rate:g} frames/s (burst "
                                   f"{frames.burst:g}) kept up; slow down")
                return STOP
            # over budget, this socket is not read until the debt is paid (TCP pushes back
            # on the client)
            return STOP if conn.closed else wait

        return on_frame

    async def serve(ws: WebSocket) -> None:
        await ws.accept()
        conn = Conn(ws, ctx.settings.ws_send_buffer)
        writer = conn.writer_task = asyncio.create_task(conn.writer())
        receive = ws.receive
        on_frame = frame_sink(conn)
        attach: Callable[[FrameSink], None] | None = ws.scope.get("bastion.ws_attach")
        try:
            if attach is not None:
                # messages go to ``on_frame`` straight from the parser (``api.ws.protocol``);
                # ``receive`` carries only the disconnect (ours after a close, or the peer's)
                attach(on_frame)
                while (await receive())["type"] != "websocket.disconnect":
                    pass
                return
            seen = 0
            while not conn.closed:
                msg = await receive()
                if msg["type"] == "websocket.disconnect":
                    break
                raw = msg.get("text")
                if raw is None:
                    raw = msg.get("bytes") or b""
                wait = on_frame(raw)
                if conn.closed:
                    break
                seen += 1
                if wait or not seen % 32:
                    # over budget: not read until the debt is paid; otherwise a client with
                    # frames buffered takes turns
                    await asyncio.sleep(wait)
        finally:
            frames.forget(str(id(conn)))
            hub.drop(conn)
            if conn.closer is not None:
                with contextlib.suppress(BaseException):
                    await conn.closer
            conn.closed = True
            writer.cancel()
            with contextlib.suppress(BaseException):
                await writer

    return [WebSocketRoute(WS_PATH, endpoint)]
