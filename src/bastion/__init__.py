"""Bastion: a deterministic crypto exchange core fed by a fenced, durable, replicated command log."""

__version__ = "0.1.0"
