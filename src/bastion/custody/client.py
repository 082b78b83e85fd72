"""The exchange's custody connector: an HTTP client for the custody service (the simulator
speaks the same API). It sorts every answer into one of three outcomes, because the worker
must act differently on each:

- a definite answer (`SendStatus`);
- ``CustodyRejected``: custody refused the request for good (bad address, key reused): the
  withdrawal fails and its funds are released;
- ``CustodyUnavailable``: no answer, a timeout or a 5xx. The outcome is *unknown* (the send may
  have been accepted), so the only safe next step is to ask again with the same idempotency key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

QUERY_BATCH = 1000


class CustodyUnavailable(Exception):
    """No definite answer: down, slow past the timeout, crashed, or a 5xx."""


class CustodyRejected(Exception):
    """A definite refusal (4xx other than 404): retrying the same request cannot succeed."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class SendStatus:
    key: str
    status: str  # pending | confirmed | failed
    txid: str
    confirmations: int
    reason: str = ""


@dataclass(frozen=True)
class ChainDeposit:
    txid: str
    asset: str
    address: str
    amount: int
    confirmations: int
    label: str


class CustodyClient:
    """One connection pool to one custody service. ``name`` identifies the connector (the
    circuit breaker is per asset *and* connector)."""

    def __init__(self, base_url: str, timeout: float = 2.0, name: str = "custody") -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout,
                                       limits=httpx.Limits(max_connections=32))

    async def close(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            resp = await self._http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise CustodyUnavailable(f"{type(exc).__name__}: {exc}") from None
        if resp.status_code >= 500:
            raise CustodyUnavailable(f"HTTP {resp.status_code}: {resp.text[:200]}")
        try:
            body = resp.json()
        except ValueError:
            raise CustodyUnavailable(f"HTTP {resp.status_code}: not JSON") from None
        if resp.status_code == 404:
            return None
        if resp.status_code >= 400:
            raise CustodyRejected(str(body.get("code", resp.status_code)),
                                  str(body.get("message", "")))
        return body

    @staticmethod
    def _status(body: dict[str, Any]) -> SendStatus:
        return SendStatus(key=body["key"], status=body["status"], txid=body.get("txid", ""),
                          confirmations=int(body.get("confirmations", 0)),
                          reason=body.get("failed", ""))

    async def submit(self, key: str, reference: str, asset: str, address: str,
                     amount: int) -> SendStatus:
        body = await self._call("POST", "/v1/withdrawals", json={
            "key": key, "reference": reference, "asset": asset, "address": address,
            "amount": amount})
        return self._status(body)

    async def status(self, key: str, asset: str) -> SendStatus | None:
        """What custody knows of `key`; None if it never accepted it."""
        body = await self._call("GET", f"/v1/withdrawals/{key}", params={"asset": asset})
        return None if body is None else self._status(body)

    async def query(self, asset: str, keys: list[str]) -> dict[str, SendStatus]:
        """What custody knows of each key (absent keys were never accepted)."""
        out: dict[str, SendStatus] = {}
        for i in range(0, len(keys), QUERY_BATCH):
            body = await self._call("POST", "/v1/withdrawals/query",
                                    json={"asset": asset, "keys": keys[i:i + QUERY_BATCH]})
            for item in body["withdrawals"]:
                out[item["key"]] = self._status(item)
        return out

    async def health(self) -> None:
        """Raises CustodyUnavailable unless custody answers."""
        await self._call("GET", "/health")

    async def new_address(self, asset: str, label: str) -> str:
        body = await self._call("POST", "/v1/addresses", json={"asset": asset, "label": label})
        return str(body["address"])

    async def deposits(self, asset: str, since_height: int = 0) -> tuple[list[ChainDeposit],
                                                                         int]:
        body = await self._call("GET", "/v1/deposits",
                                params={"asset": asset, "since_height": since_height})
        out = [ChainDeposit(txid=d["txid"], asset=d["asset"], address=d["address"],
                            amount=int(d["amount"]), confirmations=int(d["confirmations"]),
                            label=d.get("label", "")) for d in body["deposits"]]
        return out, int(body["height"])
