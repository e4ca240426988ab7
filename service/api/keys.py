"""API keys: create (the key is shown once), list, revoke. Admin keys only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status
from starlette.concurrency import run_in_threadpool

from service import auth, schemas
from service.api.deps import AdminOnly, AuthDep

router = APIRouter(prefix="/v1/keys", tags=["keys"])


def _out(info: auth.KeyInfo) -> dict:
    k = info.key
    return {"id": k.id, "name": k.name, "prefix": k.prefix, "admin": k.admin, "brains": info.brains,
            "created_at": k.created_at, "revoked_at": k.revoked_at}


@router.post("", status_code=status.HTTP_201_CREATED, response_model=schemas.KeyCreated)
async def create_key(body: schemas.KeyCreate, authenticator: AuthDep, _: AdminOnly) -> schemas.KeyCreated:
    """A new key: an admin key (`admin: true`) or one with "read" or "write" access to the brains
    named in `brains`. The answer holds the key itself, shown only this once."""
    info, key = await run_in_threadpool(
        auth.create_key, authenticator, name=body.name, admin=body.admin, brains=body.brains
    )
    return schemas.KeyCreated(**_out(info), key=key)


@router.get("", response_model=schemas.KeyList)
async def list_keys(authenticator: AuthDep, _: AdminOnly) -> schemas.KeyList:
    """Every key, revoked ones included; never the keys themselves."""
    infos = await run_in_threadpool(auth.list_keys, authenticator)
    return schemas.KeyList(keys=[schemas.KeyOut(**_out(i)) for i in infos])


@router.delete("/{key_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_key(key_id: Annotated[int, Path(ge=1, le=2**63 - 1)], authenticator: AuthDep, _: AdminOnly) -> Response:
    """Revoke a key: it stops working at once in this process, within ``BRAIN_AUTH_CACHE_SECONDS``
    in the others."""
    await run_in_threadpool(auth.revoke_key, authenticator, key_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
