"""Incident drills (``bastion drill NAME``): each seed incident replayed live against a
deployment, with figures and PASS/FAIL. Add a drill as one module in ``drills/catalog``."""

from __future__ import annotations

import importlib
import pkgutil

from bastion.drills.base import Drill


def all_drills() -> dict[str, Drill]:
    """Every drill in ``bastion.drills.catalog``, by name."""
    import bastion.drills.catalog as pkg

    found: dict[str, Drill] = {}
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{pkg.__name__}.{info.name}")
        drill = getattr(module, "DRILL", None)
        if isinstance(drill, Drill):
            found[drill.name] = drill
    return found
