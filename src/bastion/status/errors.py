"""The one error type the status package raises for bad input or forbidden transitions."""

from __future__ import annotations


class StatusError(Exception):
    """A client-visible refusal: a stable `code`, a human `message`, and the HTTP status to use."""

    def __init__(self, code: str, message: str, http_status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status


class StatusConflict(StatusError):
    """A shared record changed on another gateway while this one was changing it: the change
    is rolled back here and made again on the newer record."""

    def __init__(self, key: str) -> None:
        super().__init__("status_conflict", f"{key} changed on another gateway; try again", 409)
        self.key = key


def unavailable(message: str) -> StatusError:
    """The shared status store (a cluster's) did not confirm a change: nothing changed here."""
    return StatusError("status_unavailable", message, 503)
