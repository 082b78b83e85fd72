"""The deterministic exchange core: commands in, events and state out.

No I/O, no wall clock, no randomness and no floats live here, so the same command log always
yields the same events and the same state hash (replay, shadow runs and rollback depend on it).
"""
