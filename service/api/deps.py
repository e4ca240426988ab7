"""FastAPI dependencies: the runtime and caches hang on ``app.state``; routes ask for them here."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from service.inference import InferenceCache
from service.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def get_cache(request: Request) -> InferenceCache:
    return request.app.state.inference


def get_session(rt: Annotated[Runtime, Depends(get_runtime)]) -> Iterator[Session]:
    with rt.db.session() as s:
        yield s


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
CacheDep = Annotated[InferenceCache, Depends(get_cache)]
SessionDep = Annotated[Session, Depends(get_session)]
