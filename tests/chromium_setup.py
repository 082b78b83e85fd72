"""Headless Chromium for browser tests: find it and run it.

The Makefile installs Debian's chromium (`make test-deps`); tests never run a package manager.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def require_chromium() -> str:
    """Path to chromium, or a skip that says how to get it (`make test` installs it in CI)."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} missing in CI: `make test-deps` should have installed it")
        pytest.skip(f"{CHROMIUM} not installed: run `make test-deps` (Debian's chromium, as root)")
    return CHROMIUM


def run_chromium(args: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run headless chromium once with a throwaway profile so runs never share state."""
    binary = require_chromium()
    with tempfile.TemporaryDirectory(prefix="chromium-profile-",
                                     ignore_cleanup_errors=True) as profile:
        cmd = [binary, *FLAGS, f"--user-data-dir={profile}", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def dump_dom(url: str, *, budget_ms: int = 3000, extra: list[str] | None = None) -> str:
    """The DOM after the page's scripts ran, as chromium serialises it."""
    proc = run_chromium([f"--virtual-time-budget={budget_ms}", *(extra or []), "--dump-dom", url])
    if proc.returncode != 0:
        raise RuntimeError(f"chromium --dump-dom failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout


def screenshot(url: str, path: Path, *, width: int = 412, height: int = 915) -> Path:
    """Save a PNG of `url` at a phone-sized window."""
    path.parent.mkdir(parents=True, exist_ok=True)
    proc = run_chromium(
        [f"--screenshot={path}", f"--window-size={width},{height}", "--hide-scrollbars", url]
    )
    if proc.returncode != 0 or not path.exists():
        raise RuntimeError(
            f"chromium --screenshot failed ({proc.returncode}): {proc.stderr[-2000:]}"
        )
    return path


def png_pixels(path: Path) -> tuple[int, int, list[bytes]]:
    """Decode an 8-bit, non-interlaced RGB/RGBA PNG (what chromium writes) into rows of RGB(A)
    bytes, so tests can look at colours without an imaging dependency."""
    import struct
    import zlib

    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG")
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, chunk = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = chunk
        elif kind == b"IDAT":
            idat += chunk
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", header)
    if depth != 8 or color not in (2, 6) or interlace:
        raise ValueError(f"unsupported PNG: depth={depth} color={color} interlace={interlace}")
    bpp = 3 if color == 2 else 4
    raw, stride, rows, prev = zlib.decompress(idat), width * bpp, [], bytearray(width * bpp)
    for y in range(height):
        filt, line = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if filt == 1:
                line[i] = (line[i] + a) & 255
            elif filt == 2:
                line[i] = (line[i] + b) & 255
            elif filt == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif filt == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 255
        rows.append(bytes(line))
        prev = line
    return width, bpp, rows
