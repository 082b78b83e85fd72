"""The compiled core: build it with mypyc, load it only when it matches the sources.

``corebuild.build()`` (run by ``make``) compiles the hot modules of ``bastion.core``
(``HOT``: the order path, the book, both ledgers, the perpetual mechanics) into
``<venv>/bastion-native/<cache tag>/`` with a manifest of the sources it was built from.
``bastion/__init__.py`` calls ``install()``, which routes those imports to the extensions only
if every ``bastion/core`` source still has the hash in the manifest; otherwise (edited sources,
another interpreter, no C compiler at build time, ``BASTION_PURE=1``) the same modules load
as plain Python. Both run the same code: the compiled build is the pure one, compiled.

``KIND`` says which one is loaded (``"compiled"`` or ``"pure"``) and ``REASON`` why.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import shutil
import sys
import sysconfig
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

SRC = Path(__file__).resolve().parent.parent
CORE = SRC / "bastion" / "core"
#: the modules compiled: everything a command touches on the order path, spot and perpetual.
#: The record modules (msgspec Structs: commands, events, state, perp.state) stay Python.
HOT = (
    "arith", "records", "rules", "book", "matching", "orders", "venue", "engine",
    "ledger/base", "ledger/spot", "ledger/margin",
    "perp/records", "perp/calc", "perp/positions", "perp/keyheap", "perp/liqindex", "perp/liquidation", "perp/triggers",
    "perp/oracle",
)
PURE_ENV = "BASTION_PURE"

KIND = "pure"
REASON = "not installed"


def out_dir() -> Path:
    """Per venv and interpreter: a 3.12 venv never picks up a 3.11 build."""
    return Path(sys.prefix) / "bastion-native" / sys.implementation.cache_tag


def sources_digest() -> str:
    """One hash over every core source: compiled code also relies on the types of the modules
    it does not compile, so any edit under ``bastion/core`` retires the build."""
    h = hashlib.sha256()
    for path in sorted(CORE.rglob("*.py")):
        h.update(path.relative_to(CORE).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


class _Finder(importlib.abc.MetaPathFinder):
    def __init__(self, files: dict[str, str]) -> None:
        self.files = files

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        file = self.files.get(fullname)
        if file is None:
            return None
        return importlib.util.spec_from_file_location(fullname, file)


def install() -> None:
    """Route the hot modules to the compiled build if it is current; set ``KIND``/``REASON``."""
    global KIND, REASON
    if os.environ.get(PURE_ENV, "") not in ("", "0"):
        KIND, REASON = "pure", f"{PURE_ENV}=1"
        return
    manifest = out_dir() / "manifest.json"
    try:
        meta = json.loads(manifest.read_text())
    except (OSError, ValueError):
        KIND, REASON = "pure", "no compiled build for this interpreter (make builds it)"
        return
    if meta.get("digest") != sources_digest():
        KIND, REASON = "pure", "core sources changed since the compiled build (make rebuilds)"
        return
    files = {name: str(out_dir() / rel) for name, rel in meta["files"].items()}
    if any(name in sys.modules for name in files):
        KIND, REASON = "pure", "core modules were imported before the compiled build"
        return
    sys.meta_path.insert(0, _Finder(files))
    KIND, REASON = "compiled", f"mypyc build of {len(HOT)} modules"


def describe() -> str:
    """One line for banners and bench output."""
    return f"core: {KIND} ({REASON})"


def cannot_build() -> str:
    """Why this machine cannot compile the core (``""`` when it can): then the pure core is
    expected; otherwise ``make`` must have built it (``tests/core/test_corebuild.py``)."""
    cc = os.environ.get("CC", "cc").split()[0]
    if shutil.which(cc) is None and shutil.which("gcc") is None:
        return "no C compiler found"
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file():
        return "Python.h missing (no Python headers)"
    if importlib.util.find_spec("mypyc") is None or importlib.util.find_spec("setuptools") is None:
        return "mypyc or setuptools not installed"
    return ""


def build() -> int:
    """Compile ``HOT`` with mypyc. Never fails the caller: without a C compiler, Python's
    headers or mypyc, or if compiling fails, it says why and the pure-Python core runs."""
    reason = cannot_build()
    if reason:
        print(f"corebuild: {reason}; the pure-Python core will run")
        return 0
    try:
        return _compile()
    except (Exception, SystemExit) as exc:  # a failed build leaves the pure core, said loudly
        shutil.rmtree(out_dir(), ignore_errors=True)
        print(f"corebuild: FAILED ({exc!r}); the pure-Python core will run")
        return 0


def _compile() -> int:
    try:
        from mypyc.build import mypycify
        setuptools = importlib.import_module("setuptools")  # untyped on some versions
    except ImportError as exc:
        print(f"corebuild: mypyc unavailable ({exc}); the pure-Python core will run")
        return 0
    out = out_dir()
    t0 = time.monotonic()
    digest = sources_digest()
    with tempfile.TemporaryDirectory(prefix="bastion-native-") as tmp:
        cwd = os.getcwd()
        os.chdir(SRC)  # mypy names the modules from their paths
        try:
            paths = [f"bastion/core/{m}.py" for m in HOT]
            exts = mypycify(paths, opt_level="3", target_dir=os.path.join(tmp, "c"))
            dist = setuptools.Distribution({"name": "bastion-native", "ext_modules": exts})
            cmd = dist.get_command_obj("build_ext")
            cmd.build_lib = os.path.join(tmp, "lib")
            cmd.build_temp = os.path.join(tmp, "tmp")
            cmd.parallel = os.cpu_count() or 1
            dist.run_command("build_ext")
        finally:
            os.chdir(cwd)
        lib = Path(tmp) / "lib"
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(lib, out)
    files: dict[str, str] = {}
    for so in out.rglob("*.so"):
        rel = so.relative_to(out)
        files[".".join((*rel.parent.parts, rel.name.split(".", 1)[0]))] = rel.as_posix()
    (out / "manifest.json").write_text(json.dumps(
        {"digest": digest, "files": files, "modules": list(HOT)}, indent=1))
    print(f"corebuild: compiled {len(HOT)} core modules in {time.monotonic() - t0:.1f} s "
          f"into {out}")
    return 0

