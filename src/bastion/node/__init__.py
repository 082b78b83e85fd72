"""Runs one shard: sequencer -> journal -> core -> publish; snapshots; recovery; rollback."""

from bastion.node.config import NodeConfig
from bastion.node.layout import DataDir
from bastion.node.node import Node, wall_clock_ms
from bastion.node.recovery import RecoveryReport, rebuild, replay
from bastion.node.rollback import RollbackReport, audit_log, rollback

__all__ = [
    "DataDir",
    "Node",
    "NodeConfig",
    "RecoveryReport",
    "RollbackReport",
    "audit_log",
    "rebuild",
    "replay",
    "rollback",
    "wall_clock_ms",
]
