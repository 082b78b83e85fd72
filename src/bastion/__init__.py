"""Bastion: a deterministic crypto exchange core fed by a fenced, durable, replicated command log."""

from bastion import corebuild

__version__ = "0.1.0"

corebuild.install()  # the compiled core when it is built and current, else the pure one
