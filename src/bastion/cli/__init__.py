"""Operator command line (typer)."""
