"""Money behind the one order lifecycle: ``base.Ledger`` (the interface), ``spot`` (balances
and holds) and ``margin`` (cross margin, positions, lazy funding)."""
