"""Status page and Status API driven by the engine's real state (issue 6)."""

from bastion.status.derive import Thresholds
from bastion.status.egress import Egress
from bastion.status.errors import StatusError
from bastion.status.routes import create_app, status_routes
from bastion.status.runtime import StatusRuntime
from bastion.status.service import StatusService
from bastion.status.webhooks import RetryPolicy

__all__ = [
    "Egress",
    "RetryPolicy",
    "StatusError",
    "StatusRuntime",
    "StatusService",
    "Thresholds",
    "create_app",
    "status_routes",
]
