"""Everything a request handler needs, built once per server (no globals)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bastion.api.config import Settings
from bastion.api.security.auth import Authenticator
from bastion.api.security.keys import KeyStore
from bastion.api.security.ratelimit import Limiter
from bastion.api.service.gateway import Gateway

if TYPE_CHECKING:
    from bastion.api.ws.endpoint import Hub


@dataclass
class Context:
    settings: Settings
    gateway: Gateway
    keys: KeyStore
    auth: Authenticator
    key_limiter: Limiter
    ip_limiter: Limiter
    hub: Hub | None = None
    extra: dict[str, Any] = field(default_factory=dict)
