"""Perpetual futures mechanics: oracle and mark price, funding, liquidation, TP/SL, market specs.

Everything here is part of the deterministic core (integers only, time from ``cmd.ts``). The
money (cross margin, positions, order holds) lives in ``core.ledger.margin``; orders go through
the one lifecycle in ``core.orders``. Keep this module import-free: ``core.state`` imports
``perp.state``.
"""
