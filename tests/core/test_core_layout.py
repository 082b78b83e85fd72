"""The core's shape: every command has exactly one handler, the core has no import cycles and
no cross-module private calls, and a snapshot of another state format is refused."""

import ast
import typing
from pathlib import Path

import msgspec
import pytest

from bastion.core import commands as C
from bastion.core.codec import decode_state, encode_state
from bastion.core.engine import HANDLERS, Engine, SnapshotVersionError, register
from bastion.core.state import STATE_VERSION
from core_harness import Harness

CORE = Path(__file__).resolve().parents[2] / "src" / "bastion" / "core"


def test_every_command_has_one_handler() -> None:
    commands = set(typing.get_args(C.AnyCommand))
    assert commands == set(HANDLERS)
    with pytest.raises(AssertionError):
        register(C.PlaceOrder, HANDLERS[C.PlaceOrder])


def _module(path: Path) -> str:
    rel = path.relative_to(CORE.parent).with_suffix("")
    parts = ["bastion", *rel.parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, known: set[str]) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found & known


def test_core_has_no_import_cycles_and_no_private_calls_across_modules() -> None:
    files = {_module(p): p for p in CORE.rglob("*.py")}
    graph = {m: _imports(p, set(files)) - {m} for m, p in files.items()}
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            assert state.get(n) != 1, f"import cycle: {' -> '.join([*stack, m, n])}"
            if n not in state:
                visit(n, [*stack, m])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    for m, p in files.items():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") \
                    and not node.attr.startswith("__"):
                owner = node.value
                assert isinstance(owner, ast.Name) and owner.id in ("self", "cls"), \
                    f"{m}:{node.lineno} reaches into private {node.attr}"
            if isinstance(node, ast.ImportFrom):
                assert not any(a.name.startswith("_") for a in node.names), \
                    f"{m}:{node.lineno} imports a private name"


def test_snapshot_of_another_state_format_is_refused_clearly() -> None:
    h = Harness()
    h.place(1, "buy", 3)
    state = h.engine.export_state()
    again = Engine.from_state(decode_state(encode_state(state)))
    assert again.state_hash() == h.engine.state_hash()
    old = msgspec.structs.replace(state, version=STATE_VERSION - 1)
    with pytest.raises(SnapshotVersionError, match="replaying the journal"):
        Engine.from_state(decode_state(encode_state(old)))
