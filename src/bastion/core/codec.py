"""Binary codecs (msgpack) for commands, events and state: the journal and snapshot formats."""

import msgspec

from bastion.core.commands import AnyCommand, Command
from bastion.core.events import AnyEvent, Event
from bastion.core.state import EngineState

_encoder = msgspec.msgpack.Encoder()
_command_decoder = msgspec.msgpack.Decoder(AnyCommand)
_event_decoder = msgspec.msgpack.Decoder(AnyEvent)
_state_decoder = msgspec.msgpack.Decoder(EngineState)
_command_json = msgspec.json.Decoder(AnyCommand)


def encode_command(cmd: Command) -> bytes:
    return _encoder.encode(cmd)


def decode_command(data: bytes) -> Command:
    """Raises ``msgspec.ValidationError``/``DecodeError`` on malformed input (edge concern)."""
    result: Command = _command_decoder.decode(data)
    return result


def decode_command_json(data: bytes | str) -> Command:
    result: Command = _command_json.decode(data)
    return result


def encode_event(event: Event) -> bytes:
    return _encoder.encode(event)


def decode_event(data: bytes) -> Event:
    result: Event = _event_decoder.decode(data)
    return result


def encode_state(state: EngineState) -> bytes:
    return _encoder.encode(state)


def decode_state(data: bytes) -> EngineState:
    result: EngineState = _state_decoder.decode(data)
    return result
