"""One engine version over a feed of journal records, in its own process.

Run as a script (``python shadow_worker.py ...``) with ``PYTHONPATH`` pointing at the version
under test, so the ``bastion`` imported here is that version's, not the operator's. It uses
only the engine's long-lived surface (``codec.decode_command``/``decode_state``,
``Engine.apply``/``from_state``/``state_hash``) so older and newer versions both run it.

Feed frames: ``seq u64 | length u32 | command payload``. Output frames: ``length u32 |
msgpack [seq, events bytes, state hash or ""]``. The last stdout line is a JSON summary.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import struct
import sys
import time

FEED_HEAD = struct.Struct(">QI")
OUT_HEAD = struct.Struct(">I")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--feed", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--state", default="")
    ap.add_argument("--hash-every", type=int, default=1000)
    ap.add_argument("--expect-root", default="")
    args = ap.parse_args(argv)
    with contextlib.suppress(OSError):
        os.nice(10)  # never compete with a live node on the same machine
    import msgspec

    import bastion
    from bastion.core.codec import decode_command, decode_state
    from bastion.core.engine import Engine

    where = os.path.realpath(os.path.dirname(bastion.__file__))
    if args.expect_root and not where.startswith(os.path.realpath(args.expect_root) + os.sep):
        print(json.dumps({"error": f"imported bastion from {where}, not {args.expect_root}"}))
        return 3
    if args.state:
        with open(args.state, "rb") as f:
            engine = Engine.from_state(decode_state(f.read()), copy=False)
    else:
        engine = Engine()
    encode = msgspec.msgpack.encode
    apply = engine.apply
    every = max(1, args.hash_every)
    busy = 0.0
    count = 0
    first_seq = 0
    with open(args.feed, "rb") as feed, open(args.out, "wb") as out:
        while True:
            head = feed.read(FEED_HEAD.size)
            if not head:
                break
            seq, length = FEED_HEAD.unpack(head)
            payload = feed.read(length)
            t0 = time.process_time()  # CPU time: fair between runs on a busy machine
            events = apply(decode_command(payload))
            busy += time.process_time() - t0
            count += 1
            first_seq = first_seq or seq
            digest = engine.state_hash() if count % every == 0 else ""
            frame = encode([seq, encode(events), digest])
            out.write(OUT_HEAD.pack(len(frame)))
            out.write(frame)
        final = engine.state_hash()
        frame = encode([-1, b"", final])
        out.write(OUT_HEAD.pack(len(frame)))
        out.write(frame)
    print(json.dumps({"commands": count, "apply_seconds": busy, "first_seq": first_seq,
                      "last_seq": engine.seq, "final_hash": final, "bastion": where}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
