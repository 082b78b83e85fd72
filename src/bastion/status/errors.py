"""The one error type the status package raises for bad input or forbidden transitions."""

from __future__ import annotations


class StatusError(Exception):
    """A client-visible refusal: a stable `code`, a human `message`, and the HTTP status to use."""

    def __init__(self, code: str, message: str, http_status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status
