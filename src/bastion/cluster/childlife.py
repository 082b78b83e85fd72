"""Children that die with the process that started them, for tests and drills.

The cluster starts NATS servers, nodes, gateways and the custody simulator in sessions of their
own, so a Ctrl-C at the terminal reaches only the parent, which stops them in order. A parent
that dies without stopping them (SIGKILL, a CI timeout) would leave them running for good;
after ``bind_children()`` the kernel SIGKILLs every child the main thread starts from then on
when this process ends (Linux ``PR_SET_PDEATHSIG``, kept across exec). Off by default: a node
that ``bastion upgrade`` starts must outlive the command.
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
from collections.abc import Callable

PR_SET_PDEATHSIG = 1

_setup: Callable[[], None] | None = None


def bind_children() -> bool:
    """From now on every child started through ``child_setup`` from the main thread dies with
    this process. False where the kernel has no such switch."""
    global _setup
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: no dlopen after fork
    except (OSError, AttributeError):
        return False
    parent = os.getpid()

    def setup() -> None:  # pragma: no cover - runs in the child, between fork and exec
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the switch was set
            os._exit(1)

    _setup = setup
    return True


def child_setup() -> Callable[[], None] | None:
    """The ``preexec_fn`` for a child: None unless ``bind_children`` was called, or off the
    main thread (the kernel would kill the child when that thread ends, e.g. a worker of
    ``asyncio.to_thread`` when its loop closes)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return _setup
