"""Perpetual futures: cross margin, oracle and mark price, funding, liquidation, TP/SL.

Everything here is part of the deterministic core (integers only, time from ``cmd.ts``). The
spot engine owns the books and order ids; this package adds the perp ledger and plugs into the
engine through a few hooks (see ``perp.engine.PerpEngine``). Keep this module import-free:
``core.state`` imports ``perp.state`` while the engine is still being defined.
"""
