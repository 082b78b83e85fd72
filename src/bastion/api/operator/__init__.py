"""Operator routes (``/admin``, ``/admin/ops``): bearer token only."""
