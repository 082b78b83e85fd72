"""Gateway <-> leader messages on the shard's command subject (msgpack)."""

from __future__ import annotations

import msgspec

from bastion.core import commands as C
from bastion.core.codec import decode_command, encode_command

#: a request is refused above this many commands (one gateway tick rarely has more)
MAX_COMMANDS = 4096


class Request(msgspec.Struct, frozen=True):
    commands: list[bytes]


class Reply(msgspec.Struct, frozen=True, omit_defaults=True):
    """``first``: seq of the first command (they are ``first .. first+count-1``), or an error
    code: ``NOT_LEADER`` (retry elsewhere), anything else is final."""

    first: int = 0
    count: int = 0
    error: str = ""
    message: str = ""


def encode_request(cmds: list[C.Command]) -> bytes:
    return msgspec.msgpack.encode(Request([encode_command(c) for c in cmds]))


def decode_commands(raw: list[bytes]) -> list[C.Command]:
    if len(raw) > MAX_COMMANDS:
        raise ValueError(f"{len(raw)} commands in one request (max {MAX_COMMANDS})")
    return [decode_command(b) for b in raw]
