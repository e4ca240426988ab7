"""FastAPI dependencies: the runtime and caches hang on ``app.state``; routes ask for them here."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from service import auth
from service.api.authgate import principal_of
from service.runtime import Runtime
from service.serving import LearnerCache


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def get_learners(request: Request) -> LearnerCache:
    return request.app.state.learners


def get_session(rt: Annotated[Runtime, Depends(get_runtime)]) -> Iterator[Session]:
    """A read-only session (the routes that take one only read): it never waits for a writer."""
    with rt.db.session(read_only=True) as s:
        yield s


def get_authenticator(request: Request) -> auth.Authenticator:
    return request.app.state.auth


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
LearnersDep = Annotated[LearnerCache, Depends(get_learners)]  # the loaded learners
SessionDep = Annotated[Session, Depends(get_session)]
AuthDep = Annotated[auth.Authenticator, Depends(get_authenticator)]

# -- who may do what (service.auth): 401 without a valid key, 403 without access ------------------
bearer = HTTPBearer(
    auto_error=False, scheme_name="APIKey",
    description="An API key: `Authorization: Bearer <key>`. Not needed while the service has none.",
)


async def caller_of(request: Request) -> auth.Principal:
    """The caller: the one the gate found before the route (``service.api.authgate``); found here
    only for a route under an open path, which the gate lets through without a key."""
    principal = principal_of(request.scope)
    if principal is not None:
        return principal
    return await auth.authenticate(request.app.state.auth, auth.bearer_token(request.headers.get("authorization")))


async def get_principal(
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],  # declares the scheme in OpenAPI
) -> auth.Principal:
    return await caller_of(request)


Caller = Annotated[auth.Principal, Depends(get_principal)]


async def can_read(name: str, caller: Caller) -> auth.Principal:
    """The caller, when it may read brain ``name`` (the route's path parameter)."""
    return auth.require(caller, name, "read")


async def can_write(name: str, caller: Caller) -> auth.Principal:
    """The caller, when it may change brain ``name`` (the route's path parameter)."""
    return auth.require(caller, name, "write")


async def admin_only(caller: Caller) -> auth.Principal:
    return auth.require_admin(caller)


CanRead = Annotated[auth.Principal, Depends(can_read)]
CanWrite = Annotated[auth.Principal, Depends(can_write)]
AdminOnly = Annotated[auth.Principal, Depends(admin_only)]
