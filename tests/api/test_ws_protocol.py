"""One socket read cannot make the WebSocket parser hold the event loop (issue 11 flood).

uvicorn parses everything a read returns (up to 256 KiB with uvloop) before it pauses
reading; 256 KiB of tiny frames was ~17,000 frames parsed and queued in one callback. The
bounded protocol parses a slice per turn. The real protocol runs on a real loop; only the
socket under it is a stand-in that records pauses and writes.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from functools import partial
from types import SimpleNamespace
from typing import Any

import uvicorn
from hypothesis import given, settings
from hypothesis import strategies as st
from uvicorn.server import ServerState
from websockets.frames import Frame, Opcode

from bastion.api.ws.endpoint import Conn
from bastion.api.ws.protocol import READ_SLICE, STOP, BoundedWebSocketProtocol

FRAME = b'{"op":"ping"}'


def masked(data: bytes, opcode: int = 0x1) -> bytes:
    mask = b"\x01\x02\x03\x04"
    return struct.pack("!BB", 0x80 | opcode, 0x80 | len(data)) + mask + bytes(
        b ^ mask[i % 4] for i, b in enumerate(data))


class Socket:
    """The transport under the protocol: what it was told, nothing sent anywhere."""

    def __init__(self) -> None:
        self.reading = True
        self.closing = False
        self.written = 0
        self.writes: list[bytes] = []

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    abort = close

    def write(self, data: bytes) -> None:
        self.written += len(data)
        self.writes.append(data)

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 8080)}.get(
            name, default)


def _open(app: Any) -> tuple[BoundedWebSocketProtocol, Socket]:
    config = uvicorn.Config(app, ws="websockets-sansio", ws_max_size=65536, lifespan="off",
                            ws_ping_interval=None)
    config.load()
    proto = BoundedWebSocketProtocol(config, ServerState(), {}, _loop=asyncio.get_running_loop())
    sock = Socket()
    proto.connection_made(sock)  # type: ignore[arg-type]
    key = base64.b64encode(os.urandom(16)).decode()
    proto.data_received((f"GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                         f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                         "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    return proto, sock


def test_a_read_of_tiny_frames_is_parsed_a_slice_per_turn() -> None:
    async def run() -> None:
        got: list[str] = []
        gate = asyncio.Event()

        async def app(scope: Any, receive: Any, send: Any) -> None:
            assert (await receive())["type"] == "websocket.connect"
            await send({"type": "websocket.accept"})
            await gate.wait()
            while len(got) < n:
                got.append((await receive())["text"])

        proto, sock = _open(app)
        await asyncio.sleep(0.01)  # the app accepts
        frames = [masked(FRAME[:-1] + f',"id":{i}}}'.encode()) for i in range(20_000)]
        data = b"".join(frames)
        n = len(frames)
        assert len(data) > 256 * 1024
        proto.data_received(data)
        # one read: at most a slice's worth of frames was parsed, the rest waits unread
        queued = proto.queue.qsize()
        assert 0 < queued <= READ_SLICE // len(frames[0]) + 1, queued
        assert not sock.reading and len(proto.backlog) >= len(data) - READ_SLICE
        gate.set()
        for _ in range(200):
            await asyncio.sleep(0)
            # whatever the application has not taken is never more than about a slice
            assert proto.queue.qsize() <= READ_SLICE // len(frames[0]) + 1
            if len(got) == n:
                break
        assert got == [FRAME[:-1].decode() + f',"id":{i}}}' for i in range(n)]
        assert sock.reading and proto.backlog == b""  # all taken: reading again

    asyncio.run(run())


def test_pings_alone_are_parsed_a_slice_per_turn() -> None:
    """Control frames never reach the application, so nothing pauses reading for them; they
    are still parsed one slice per loop turn, and answered."""
    async def run() -> None:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            await receive()
            await send({"type": "websocket.accept"})
            await asyncio.sleep(5)

        proto, sock = _open(app)
        await asyncio.sleep(0.01)
        written = sock.written
        ping = masked(b"p", opcode=0x9)
        proto.data_received(ping * 40_000)
        assert len(proto.backlog) >= len(ping) * 40_000 - READ_SLICE
        turns = 0
        while proto.backlog:
            await asyncio.sleep(0)
            turns += 1
        assert turns >= len(ping) * 40_000 // READ_SLICE - 1
        assert sock.written - written >= 40_000 * 3  # every ping got its pong
        assert sock.reading

    asyncio.run(run())


def test_a_flood_after_the_close_frame_is_cut_not_parsed() -> None:
    async def run() -> None:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            await receive()
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": 1008, "reason": "bye"})

        proto, sock = _open(app)
        await asyncio.sleep(0.01)
        assert proto.close_sent
        proto.data_received(masked(FRAME) * 10_000)
        assert sock.closing
        assert proto.queue.qsize() <= 2  # connect + disconnect, none of the flood

    asyncio.run(run())


def test_replies_queued_together_go_out_in_one_write() -> None:
    """After an fsync releases a burst of acks, a connection's replies are framed and written
    together: one socket write, not one ASGI send (decode, encode, write) per reply."""
    async def run() -> None:
        proto_box: list[BoundedWebSocketProtocol] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            await receive()
            await send({"type": "websocket.accept"})
            ws: Any = SimpleNamespace(scope={"bastion.send_texts": proto_box[0].send_texts},
                                      client=None, send=send)
            conn = Conn(ws, 1 << 20)
            replies = [b'{"id":%d,"ok":true,"result":"\xc3\xa9"}' % i for i in range(40)]
            for r in replies:
                conn.send(r)
            assert conn.buffered == sum(map(len, replies))
            writer = asyncio.ensure_future(conn.writer())
            await asyncio.sleep(0.01)
            assert conn.buffered == 0
            writer.cancel()

        proto, sock = _open(app)
        proto_box.append(proto)
        before = len(sock.writes)
        await asyncio.sleep(0.05)
        writes = sock.writes[before + 1:]  # after the handshake response
        assert len(writes) == 1
        data, texts = writes[0], []
        while data:  # server frames: unmasked, short
            assert data[0] == 0x81 and data[1] < 126
            texts.append(data[2:2 + data[1]].decode())
            data = data[2 + data[1]:]
        assert texts == [f'{{"id":{i},"ok":true,"result":"\u00e9"}}' for i in range(40)]

    asyncio.run(run())


def _collect(into: list[str | bytes], message: str | bytes) -> float:
    into.append(message)
    return 0.0


def _attached(sink: Any) -> tuple[BoundedWebSocketProtocol, Socket]:
    """A protocol whose application accepted and attached ``sink``, as the endpoint does."""
    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        box[0].attach(sink)
        while (await receive())["type"] != "websocket.disconnect":
            raise AssertionError("a message went to receive() after attach")

    box: list[BoundedWebSocketProtocol] = []
    proto, sock = _open(app)
    box.append(proto)
    return proto, sock


def test_attached_messages_reach_the_sink_in_the_read_callback() -> None:
    """No queue, no loop turn, no pause of reading per message: the read's frames are handled
    before ``data_received`` returns, in order; text arrives as ``str``, binary as bytes."""
    async def run() -> None:
        got: list[str | bytes] = []
        proto, sock = _attached(lambda m: got.append(m) or 0.0)
        await asyncio.sleep(0.01)
        proto.data_received(b"".join(masked(b'{"id":%d}' % i) for i in range(50))
                            + masked(b"\x00\xff", opcode=0x2))
        assert got == [f'{{"id":{i}}}' for i in range(50)] + [b"\x00\xff"]
        assert proto.queue.empty() and sock.reading and not proto.read_paused

    asyncio.run(run())


def test_a_sink_hold_keeps_later_messages_in_order_until_it_ends() -> None:
    """The frame budget: the sink answers seconds to wait; the socket is not read meanwhile
    and the messages already parsed are handed over, in order, when the wait ends."""
    async def run() -> None:
        got: list[str | bytes] = []

        def sink(m: str | bytes) -> float:
            got.append(m)
            return 0.05 if m == '{"id":3}' else 0.0

        proto, sock = _attached(sink)
        await asyncio.sleep(0.01)
        proto.data_received(b"".join(masked(b'{"id":%d}' % i) for i in range(8)))
        assert got == [f'{{"id":{i}}}' for i in range(4)]
        assert not sock.reading and len(proto.held) == 4
        proto.data_received(masked(b'{"id":8}'))  # a read that raced the pause waits too
        await asyncio.sleep(0.02)
        assert len(got) == 4  # still within the wait
        await asyncio.sleep(0.1)
        assert got == [f'{{"id":{i}}}' for i in range(9)]
        assert sock.reading and not proto.held

    asyncio.run(run())


def test_messages_queued_before_the_attach_go_first() -> None:
    """Frames a client pipelined behind its upgrade request were queued for ``receive``
    before the application attached: the sink gets them first, then the later ones."""
    async def run() -> None:
        got: list[str | bytes] = []
        gate = asyncio.Event()
        box: list[BoundedWebSocketProtocol] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            await receive()
            await send({"type": "websocket.accept"})
            await gate.wait()
            box[0].attach(lambda m: got.append(m) or 0.0)
            await receive()

        proto, sock = _open(app)
        box.append(proto)
        await asyncio.sleep(0.01)
        proto.data_received(masked(b"a") + masked(b"b"))
        assert not sock.reading  # the queue path: paused until the application reads
        gate.set()
        await asyncio.sleep(0.01)
        proto.data_received(masked(b"c"))
        assert got == ["a", "b", "c"] and sock.reading

    asyncio.run(run())


def test_nothing_reaches_the_sink_after_the_close() -> None:
    """``STOP`` (the endpoint closing the connection) pauses reading; the close frame resumes
    it for the peer's reply, and what a client sends meanwhile is dropped."""
    async def run() -> None:
        got: list[str | bytes] = []
        proto, sock = _attached(lambda m: got.append(m) or STOP)
        await asyncio.sleep(0.01)
        proto.data_received(masked(b"x") + masked(b"y"))
        assert got == ["x"] and not sock.reading
        await proto.send({"type": "websocket.close", "code": 1008, "reason": "flood"})
        assert sock.reading
        proto.data_received(masked(b"z"))
        assert got == ["x"] and not proto.held

    asyncio.run(run())


def test_invalid_utf8_text_closes_with_1007() -> None:
    async def run() -> None:
        got: list[str | bytes] = []
        proto, sock = _attached(lambda m: got.append(m) or 0.0)
        await asyncio.sleep(0.01)
        proto.data_received(masked(b"\xff\xfe"))
        assert got == [] and sock.closing
        assert b"\x88\x02\x03\xef" in b"".join(sock.writes)  # close frame, code 1007

    asyncio.run(run())


def test_reply_frames_of_every_length_class_match_websockets() -> None:
    """The hand-made frame headers (7-, 16- and 64-bit lengths) are what websockets writes."""
    async def run() -> None:
        proto, sock = _attached(lambda m: 0.0)
        await asyncio.sleep(0.01)
        sizes = [0, 1, 125, 126, 127, 65535, 65536, 70000]
        texts = [b"x" * n for n in sizes]
        before = len(sock.writes)
        await proto.send_texts(texts)
        assert len(sock.writes) == before + 1
        want = b"".join(Frame(Opcode.TEXT, t).serialize(mask=False) for t in texts)
        assert sock.writes[-1] == want

    asyncio.run(run())


def _frame(payload: bytes, opcode: int, fin: bool = True) -> bytes:
    """A masked client frame with the shortest length encoding."""
    mask = os.urandom(4)
    size = len(payload)
    head = bytes((0x80 * fin | opcode,))
    if size < 126:
        head += bytes((0x80 | size,))
    elif size < 0x10000:
        head += bytes((0x80 | 126,)) + size.to_bytes(2, "big")
    else:
        head += bytes((0x80 | 127,)) + size.to_bytes(8, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


_texts = st.text(max_size=300).map(lambda t: ("text", t))
_binaries = st.binary(max_size=200).map(lambda b: ("binary", b))
_pings = st.binary(max_size=20).map(lambda b: ("ping", b))
_fragmented = st.lists(st.text(max_size=40), min_size=2, max_size=4).map(
    lambda parts: ("fragments", parts))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(_texts, _binaries, _pings, _fragmented), max_size=30),
       st.lists(st.integers(min_value=1, max_value=700), max_size=40),
       st.booleans())
def test_any_split_of_any_frame_mix_gives_the_same_messages(
        items: list[tuple[str, Any]], cuts: list[int], fast: bool) -> None:
    """Frames of every kind, cut into reads anywhere: the sink gets every message once, in
    order, and every ping its pong, whether the simple frames take the short parser
    (``fast``) or all of them go through websockets."""
    stream, want, pings = b"", [], 0
    for kind, value in items:
        if kind == "text":
            stream += _frame(value.encode(), 0x1)
            want.append(value)
        elif kind == "binary":
            stream += _frame(value, 0x2)
            want.append(value)
        elif kind == "ping":
            stream += _frame(value, 0x9)
            pings += 1
        else:
            stream += _frame(value[0].encode(), 0x1, fin=False)
            for k, part in enumerate(value[1:], 2):
                stream += _frame(part.encode(), 0x0, fin=k == len(value))
            want.append("".join(value))

    async def run() -> None:
        got: list[str | bytes] = []
        proto, sock = _attached(lambda m: got.append(m) or 0.0)
        await asyncio.sleep(0.01)
        if not fast:
            proto._simple_ok = lambda: False  # type: ignore[method-assign]
        written = len(sock.writes)
        rest = stream
        for cut in cuts:
            proto.data_received(rest[:cut])
            rest = rest[cut:]
            while proto.backlog:
                await asyncio.sleep(0)
        proto.data_received(rest)
        while proto.backlog:
            await asyncio.sleep(0)
        assert got == want
        assert not sock.closing and proto.queue.empty()
        pongs = b"".join(sock.writes[written:])
        assert pongs.count(b"\x8a") >= pings  # each pong frame starts with FIN + 0xA

    asyncio.run(run())


def test_bad_frames_keep_websockets_close_codes() -> None:
    """What the short parser does not take is websockets' to judge: an unmasked frame
    closes with 1002, one over the size limit with 1009, after the simple frames before it
    were delivered."""
    async def run() -> None:
        for bad, code in ((b"\x81\x02hi", 1002),
                          (b"\x81\xff" + (65537).to_bytes(8, "big") + b"\x00" * 4, 1009)):
            got: list[str | bytes] = []
            proto, sock = _attached(partial(_collect, got))
            await asyncio.sleep(0.01)
            proto.data_received(_frame(b"ok", 0x1) + bad)
            assert got == ["ok"] and sock.closing
            close = sock.writes[-1]  # close frame: opcode, length, code, reason
            assert close[0] == 0x88 and close[2:4] == code.to_bytes(2, "big"), close

    asyncio.run(run())


def test_a_read_inside_a_frame_websockets_began_is_not_taken_for_a_new_frame() -> None:
    """A ping cut after its header leaves websockets' parser inside the frame; the next read
    starts with payload bytes that look like a text frame's header (zero mask: the payload
    is sent as is). They stay websockets': the ping is answered, nothing reaches the sink."""
    async def run() -> None:
        got: list[str | bytes] = []
        proto, sock = _attached(lambda m: got.append(m) or 0.0)
        await asyncio.sleep(0.01)
        payload = b"\x81\x82" + b"ab"
        ping = b"\x89\x84" + b"\x00" * 4 + payload
        proto.data_received(_frame(b"before", 0x1) + ping[:6])
        proto.data_received(ping[6:] + _frame(b"after", 0x1))
        assert got == ["before", "after"]
        assert sock.writes[-1] == b"\x8a\x04" + payload and not sock.closing

    asyncio.run(run())


def test_a_turns_replies_go_out_in_one_write_and_in_order_while_paused() -> None:
    """With the protocol's synchronous write, what one loop turn queued is one socket write
    at the end of the turn (no task); while the transport asks the writer to pause, replies
    wait in the connection (counted against its bound) and then follow in order."""
    async def run() -> None:
        proto, sock = _attached(lambda m: 0.0)
        await asyncio.sleep(0.01)
        ws: Any = SimpleNamespace(scope={"bastion.send_texts": proto.send_texts,
                                         "bastion.write_texts": proto.write_texts},
                                  client=None, send=None)
        conn = Conn(ws, 1 << 20)
        conn.writer_task = asyncio.ensure_future(conn.writer())

        def texts(writes: list[bytes]) -> list[str]:
            data, out = b"".join(writes), []
            while data:
                assert data[0] == 0x81 and data[1] < 126
                out.append(data[2:2 + data[1]].decode())
                data = data[2 + data[1]:]
            return out

        before = len(sock.writes)
        for i in range(5):
            conn.send(b'{"id":%d}' % i)
        assert len(sock.writes) == before  # not yet: at the end of the turn
        await asyncio.sleep(0)
        assert len(sock.writes) == before + 1 and conn.buffered == 0
        proto.pause_writing()
        for i in range(5, 8):
            conn.send(b'{"id":%d}' % i)
        await asyncio.sleep(0.01)
        assert len(sock.writes) == before + 1 and conn.buffered == 3 * len(b'{"id":5}')
        conn.send(b'{"id":8}')  # its flush runs first, while the writer still holds 5-7:
        proto.resume_writing()  # it queues behind them, though the socket is writable again
        await asyncio.sleep(0.01)
        conn.send(b'{"id":9}')
        await asyncio.sleep(0)
        assert texts(sock.writes[before:]) == [f'{{"id":{i}}}' for i in range(10)]
        assert conn.buffered == 0
        conn.writer_task.cancel()

    asyncio.run(run())
