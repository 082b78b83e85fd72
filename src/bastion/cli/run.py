"""Embedded default: until the gateway lands this replays a short demo through the engine."""

from rich.console import Console

from bastion.core.engine import Engine
from bastion.demo import demo_setup, stamp


def run_embedded() -> None:
    console = Console()
    engine = Engine()
    for cmd in stamp(demo_setup()):
        for event in engine.apply(cmd):
            console.print(event)
    console.print(f"state hash {engine.state_hash()}")
