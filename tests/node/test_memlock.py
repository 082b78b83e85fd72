"""``lock_memory``: pages stay resident once touched, and only touched pages count."""

from __future__ import annotations

import subprocess
import sys

from bastion.api.config import Settings

PROBE = """
from bastion.node.memlock import lock_memory, locked_bytes
why = lock_memory()
before = locked_bytes()
block = bytearray(64 * 1024 * 1024)  # touched (zeroed) after the lock: locked as it faults
after = locked_bytes()
print(repr(why), before, after)
"""


def test_locked_on_fault_or_a_stated_reason() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    why, before, after = out[0], int(out[1]), int(out[-1])
    if why == "None":
        assert after - before >= 60 * 1024 * 1024  # the new block is locked as it is touched
        assert before < 1024 * 1024 * 1024  # on fault: not the whole mapped address space
    else:  # refused (no CAP_IPC_LOCK and a finite limit, or not Linux): says why, locks nothing
        assert "RLIMIT_MEMLOCK" in " ".join(out[:-2]) or "Linux" in " ".join(out[:-2])
        assert after == before == 0


def test_settings() -> None:
    assert Settings.from_env({}).mlock is False
    assert Settings.from_env({"BASTION_MLOCK": "1"}).mlock is True
    assert Settings.from_env({"BASTION_MLOCK": "0"}).mlock is False
    assert Settings.from_env({}).writer_yields is False
    assert Settings.from_env({"BASTION_WRITER_YIELDS": "1"}).writer_yields is True
