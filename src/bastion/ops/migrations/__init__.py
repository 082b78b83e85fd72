"""Declarative metadata migrations: the file format, dry-run on a copy of live state, apply."""
