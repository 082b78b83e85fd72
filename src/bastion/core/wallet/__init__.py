"""Withdrawals and deposits: the journaled, deterministic half of the withdrawal pipeline
(``desk.py`` the state machine and its handlers, ``state.py`` its records)."""
