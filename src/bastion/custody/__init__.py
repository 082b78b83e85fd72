"""Custody: the simulator of the outside custody/chain service and the exchange's client for
it. Beside node/ops in the layering; the core never imports it."""
