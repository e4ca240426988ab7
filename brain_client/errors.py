"""What the client raises: one exception per kind of answer, each with the service's reason."""

from __future__ import annotations


class BrainAPIError(Exception):
    """The service answered with an error status; ``detail`` is its reason (``{"detail": ...}``)."""

    status: int = 0

    def __init__(self, status: int, detail: object, *, method: str = "", path: str = "") -> None:
        super().__init__(f"{method} {path}: {status} {detail}".strip())
        self.status, self.detail, self.method, self.path = status, detail, method, path


class Invalid(BrainAPIError):  # 400, 422
    pass


class Unauthorized(BrainAPIError):  # 401: no key, or an unknown or revoked one
    pass


class Forbidden(BrainAPIError):  # 403: the key may not do this to this brain
    pass


class NotFound(BrainAPIError):  # 404
    pass


class Conflict(BrainAPIError):  # 409
    pass


class TooLarge(BrainAPIError):  # 413
    pass


class Unavailable(BrainAPIError):  # 503 (and 502/504) after every retry
    pass


class JobFailed(Exception):
    """A job the client waited for ended in state "failed"."""

    def __init__(self, job: object) -> None:
        super().__init__(f"job {getattr(job, 'id', '?')} failed: {getattr(job, 'error', None)}")
        self.job = job


_BY_STATUS: dict[int, type[BrainAPIError]] = {
    400: Invalid, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 413: TooLarge,
    422: Invalid, 502: Unavailable, 503: Unavailable, 504: Unavailable,
}


def error_for(status: int, detail: object, *, method: str, path: str) -> BrainAPIError:
    cls = _BY_STATUS.get(status, BrainAPIError)
    err = cls(status, detail, method=method, path=path)
    err.status = status
    return err
