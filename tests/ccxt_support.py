"""Unmodified ccxt exchanges with only their ``urls['api']`` entries pointed at our server."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

import ccxt


def point(ex: Any, base: str) -> Any:
    """Replace scheme+host of every API URL with ``base``, keeping each path."""
    for name, url in list(ex.urls["api"].items()):
        if isinstance(url, str):
            ex.urls["api"][name] = base + urlparse(url).path
    return ex


def binance(base: str, key: str | None, secret: str | None) -> ccxt.binance:
    return point(ccxt.binance({"apiKey": key, "secret": secret}), base)


def binanceusdm(base: str, key: str | None, secret: str | None) -> ccxt.binanceusdm:
    return point(ccxt.binanceusdm({"apiKey": key, "secret": secret}), base)
