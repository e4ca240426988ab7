"""Authentication before anything else: a request without a valid key reaches no route.

:class:`AuthGate` (plain ASGI, inside the size limit and request ids of ``service.app``) finds the
caller of each request from its ``Authorization: Bearer`` header (:func:`service.auth.authenticate`:
from memory, else the database in a worker thread) before the application runs. Without a valid
key the answer is the 401 the routes gave before, and not a byte of the body has been read or
parsed. The caller goes into the request's scope (``request.state.principal``), where the routes'
dependencies (``service.api.deps``) take it for their per-brain checks (403).

Open without a key: liveness, readiness, the API's documents and the dashboard's static files.
``/metrics`` is open too but checks a key that is sent: a key shows the per-brain series of the
brains it may read (``service.observability``).
"""

from __future__ import annotations

from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException

from service import auth

STATE_KEY = "principal"  # request.state.principal: the caller, None for an anonymous /metrics scrape
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
OPEN_MOUNT = "/ui"  # the dashboard's static page; it calls the API with the key a person types in
KEY_OPTIONAL = frozenset({"/metrics"})


def route_path(scope) -> str:
    """The path the router matches (as Starlette reads it): without the ``root_path`` that a proxy
    mounts the API under."""
    path, root = scope["path"], scope.get("root_path", "")
    if root and path.startswith(root) and (path == root or path[len(root)] == "/"):
        return path[len(root):]
    return path


def is_open(path: str) -> bool:
    return path in OPEN_PATHS or path == OPEN_MOUNT or path.startswith(OPEN_MOUNT + "/")


def principal_of(scope) -> auth.Principal | None:
    """The caller the gate found for this request; None when it found none (an open path)."""
    return scope.get("state", {}).get(STATE_KEY)


class AuthGate:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or is_open(path := route_path(scope)):
            await self.app(scope, receive, send)
            return
        token = auth.bearer_token(_header(scope, b"authorization"))
        try:
            principal = await auth.authenticate(scope["app"].state.auth, token)
        except HTTPException as exc:
            if token is not None or path not in KEY_OPTIONAL:
                await JSONResponse({"detail": exc.detail}, exc.status_code, exc.headers)(scope, receive, send)
                return
            principal = None  # an anonymous scrape of /metrics
        except OperationalError:
            detail = "could not check the API key: the database is unavailable; retry later"
            await JSONResponse({"detail": detail}, 503)(scope, receive, send)
            return
        scope.setdefault("state", {})[STATE_KEY] = principal
        await self.app(scope, receive, send)


def _header(scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None
