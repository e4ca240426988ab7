"""Domain errors, each carrying the HTTP status the API answers with (never a 500)."""

from __future__ import annotations


class BrainError(Exception):
    status = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(BrainError):
    status = 404


class Conflict(BrainError):
    status = 409


class TooLarge(BrainError):
    status = 413


class Gone(BrainError):
    status = 410


class Invalid(BrainError):
    status = 422


class Unavailable(BrainError):
    status = 503
