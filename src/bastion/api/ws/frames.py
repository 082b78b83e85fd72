"""Client frames of the common kind, parsed without websockets' generator parser.

A client's order is one small masked text frame; websockets parses each through four
generator layers, a ``Frame`` object and its checks, a few microseconds apiece on the event
loop. ``parse_simple`` takes the frames that need none of that (RFC 6455 5.2: FIN set, no
RSV bits, text or binary, masked, within the size limit) from the front of a read and says
where it stopped: at the end, inside such a frame (keep the bytes for the next read), or at
a frame of any other kind (control, fragment, reserved bits or opcode, unmasked, too large),
which the caller hands to websockets with everything after it, so every check and every
close code stays websockets' own.
"""

from __future__ import annotations

try:  # websockets' C speedup, as its own parser uses
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover (a build without its C extension)
    from websockets.utils import apply_mask

#: first byte of a final text / binary frame without RSV bits
TEXT, BINARY = 0x81, 0x82
#: ``parse_simple``'s ``need`` for "a frame of another kind starts here"
OTHER = -1


def parse_simple(data: bytes, max_size: int) -> tuple[list[tuple[bool, bytes]], int, int]:
    """The simple frames at the front of ``data``: ``(is_text, payload)`` each, unmasked;
    the offset where parsing stopped; and what is there: ``OTHER``, or the bytes the frame
    starting there needs in all (0 while its header is incomplete; nothing left: 0)."""
    out: list[tuple[bool, bytes]] = []
    pos, end = 0, len(data)
    while pos < end:
        b0 = data[pos]
        if b0 != TEXT and b0 != BINARY:
            return out, pos, OTHER
        if end - pos < 2:
            return out, pos, 0
        b1 = data[pos + 1]
        if b1 < 0x80:  # unmasked: websockets fails the connection (1002)
            return out, pos, OTHER
        size = b1 & 0x7F
        head = pos + 2
        if size == 126:
            if end - head < 2:
                return out, pos, 0
            size = int.from_bytes(data[head:head + 2], "big")
            head += 2
        elif size == 127:
            if end - head < 8:
                return out, pos, 0
            size = int.from_bytes(data[head:head + 8], "big")
            head += 8
        if size > max_size:  # websockets closes with 1009
            return out, pos, OTHER
        body = head + 4
        stop = body + size
        if stop > end:
            return out, pos, stop - pos
        out.append((b0 == TEXT, apply_mask(data[body:stop], data[head:body])))
        pos = stop
    return out, pos, 0
