"""API keys: who a request comes from (``Authorization: Bearer <key>``) and what it may do.

- The admin key (setting ``admin_key``, ``BRAIN_ADMIN_KEY``) and keys created with ``admin: true``
  may do everything: create and delete brains, manage keys.
- Other keys hold grants on brains by name: "read" (GET a brain, its tasks, versions, metrics and
  jobs; predict) or "write" (read, and everything that changes the brain: samples, evaluate,
  sleep, meta-train, promote, configure).
- Auth is on when an admin key is configured or any key was ever created (a revoked key keeps it
  on: revoking every key does not reopen the API); off only when neither, the embedded default,
  where every request may do everything.

Keys are ``pb_`` and 43 characters from :func:`secrets.token_urlsafe` (256 bits): only their sha256
and a short display prefix are stored. The predict route must not touch the database per request,
so every process remembers key hash -> :class:`Principal` for ``auth_cache_seconds``; creating or
revoking a key (or deleting a brain) forgets it all in that process at once, other processes
within that time. Valid keys and refused ones are remembered apart, each store bounded and least
recently used first out: a flood of random tokens churns only the refusals, never a valid key.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Generic, Literal, TypeVar

from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from service.db import Database
from service.errors import Conflict, Invalid, NotFound
from service.settings import Settings
from service.tables import ApiKey, ApiKeyGrant, Brain, utcnow

log = logging.getLogger(__name__)

Access = Literal["read", "write"]
KEY_PREFIX = "pb_"
DISPLAY_CHARS = 11  # "pb_" and 8 characters of the key: enough to tell keys apart, useless to guess
MAX_KEYS = 10_000  # valid keys one process remembers (only an admin can make more of them)
MAX_REFUSED = 10_000  # unknown or revoked keys one process remembers (anyone can send more)
NO_KEY = "this API needs a key: send `Authorization: Bearer <key>`"


class AuthConfigError(RuntimeError):
    """The settings ask for something unsafe (``require_auth`` without an admin key)."""


@dataclass(frozen=True)
class Principal:
    """Who a request comes from: an admin, or a key with grants on brains by name."""

    name: str
    admin: bool = False
    brains: Mapping[str, Access] = field(default_factory=lambda: MappingProxyType({}))
    key_id: int | None = None

    def can(self, brain: str, access: Access) -> bool:
        if self.admin:
            return True
        held = self.brains.get(brain)
        return held == "write" or (held == "read" and access == "read")


OPEN = Principal(name="anyone (authentication is off)", admin=True)
ADMIN = Principal(name="the admin key (BRAIN_ADMIN_KEY)", admin=True)


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """sha256: enough for random 256-bit keys (a slow password hash guards guessable secrets)."""
    return hashlib.sha256(key.encode()).hexdigest()


def bearer_token(header: str | None) -> str | None:
    """The key in an ``Authorization: Bearer <key>`` header; None when there is none."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def unauthorized(reason: str, *, invalid: bool = True) -> HTTPException:
    challenge = 'Bearer error="invalid_token"' if invalid else "Bearer"
    return HTTPException(401, reason, headers={"WWW-Authenticate": challenge})


def forbidden(principal: Principal, brain: str | None, access: Access | Literal["admin"]) -> HTTPException:
    if access == "admin":
        return HTTPException(403, f"{principal.name} is not an admin key: only admin keys may do this")
    verb = "read" if access == "read" else "change"
    return HTTPException(403, f"{principal.name} may not {verb} brain {brain!r}")


def require(principal: Principal, brain: str, access: Access) -> Principal:
    if not principal.can(brain, access):
        raise forbidden(principal, brain, access)
    return principal


def require_admin(principal: Principal) -> Principal:
    if not principal.admin:
        raise forbidden(principal, None, "admin")
    return principal


def configured_admin_key(settings: Settings) -> str | None:
    key = settings.admin_key.get_secret_value().strip() if settings.admin_key is not None else ""
    return key or None


def check_settings(settings: Settings) -> None:
    """Raises :class:`AuthConfigError` when the API must not start with these settings."""
    if settings.require_auth and configured_admin_key(settings) is None:
        raise AuthConfigError(
            "BRAIN_REQUIRE_AUTH is set but BRAIN_ADMIN_KEY is not: refusing to start an API that "
            "anyone could use. Set BRAIN_ADMIN_KEY to a long random secret, e.g. the output of "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`."
        )


T = TypeVar("T")


class _Memory(Generic[T]):
    """At most ``size`` entries, each until its expiry; the least recently used goes first.

    Thread-safe: :meth:`Authenticator.peek` reads on the event loop while worker threads write."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[str, tuple[float, T]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str, now: float) -> T | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            if item[0] <= now:
                del self._items[key]
                return None
            self._items.move_to_end(key)
            return item[1]

    def put(self, key: str, value: T, expiry: float) -> None:
        with self._lock:
            self._items[key] = (expiry, value)
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


class Authenticator:
    """Finds the :class:`Principal` of a key, from memory when it can (see the module docstring).

    :meth:`peek` answers from memory alone (on the event loop); when it cannot, :meth:`load` asks
    the database (in a worker thread). :func:`authenticate` does both."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.db = db
        self.ttl = settings.auth_cache_seconds
        admin_key = configured_admin_key(settings)
        self._admin_hash = hash_key(admin_key) if admin_key else None
        self._lock = threading.Lock()
        self._keys: _Memory[Principal] = _Memory(MAX_KEYS)  # hash -> who
        self._refused: _Memory[str] = _Memory(MAX_REFUSED)  # hash -> why refused
        self._on: tuple[float, bool] | None = None  # (expiry, whether auth is on)

    @property
    def admin_key_configured(self) -> bool:
        return self._admin_hash is not None

    def forget(self) -> None:
        """Forget every key (a key was created or revoked, or a brain deleted)."""
        with self._lock:
            self._keys.clear()
            self._refused.clear()
            self._on = None

    # -- from memory ---------------------------------------------------------------------------
    def _auth_on(self, now: float) -> bool | None:
        if self._admin_hash is not None:
            return True
        on = self._on
        return on[1] if on is not None and on[0] > now else None

    def peek(self, token: str | None) -> Principal | None:
        """The caller from memory; None when only the database can tell. Raises 401 for a key
        remembered as unknown or revoked, or no key while auth is on."""
        now = time.monotonic()
        if token is None:
            on = self._auth_on(now)
            if on is None:
                return None
            if on:
                raise unauthorized(NO_KEY, invalid=False)
            return OPEN
        digest = hash_key(token)
        if self._admin_hash is not None and hmac.compare_digest(digest, self._admin_hash):
            return ADMIN
        who = self._keys.get(digest, now)
        if who is not None:
            return who
        why = self._refused.get(digest, now)
        if why is not None:
            raise unauthorized(why)
        if self._auth_on(now) is False:
            return OPEN  # auth is off: a key sent anyway changes nothing
        return None

    # -- from the database ---------------------------------------------------------------------
    def auth_on(self) -> bool:
        """Whether auth is on (reads the database when memory is stale)."""
        on = self._auth_on(time.monotonic())
        if on is not None:
            return on
        with self.db.session(read_only=True) as s:
            on = s.scalar(select(ApiKey.id).limit(1)) is not None
        with self._lock:
            self._on = (time.monotonic() + self.ttl, on)
        return on

    def load(self, token: str | None) -> Principal:
        """The caller, reading the database for what memory lacks; raises 401 like :meth:`peek`."""
        if token is None:
            if self.auth_on():
                raise unauthorized(NO_KEY, invalid=False)
            return OPEN
        digest = hash_key(token)
        if self._admin_hash is not None and hmac.compare_digest(digest, self._admin_hash):
            return ADMIN
        with self.db.session(read_only=True) as s:
            row = s.scalar(select(ApiKey).where(ApiKey.key_hash == digest))
            grants = {} if row is None else dict(s.execute(
                select(Brain.name, ApiKeyGrant.access)
                .join(Brain, Brain.id == ApiKeyGrant.brain_id)
                .where(ApiKeyGrant.key_id == row.id)
            ).tuples().all())
        if row is None and not self.auth_on():
            return OPEN  # auth is off: a key sent anyway changes nothing
        who: Principal | str
        if row is None:
            who = "unknown API key"
        elif row.revoked_at is not None:
            who = f"API key {row.prefix}… was revoked"
        else:
            who = Principal(name=f"key {row.name!r} ({row.prefix}…)", admin=row.admin,
                            brains=MappingProxyType(grants), key_id=row.id)
        expiry = time.monotonic() + self.ttl
        if isinstance(who, str):
            self._refused.put(digest, who, expiry)
            raise unauthorized(who)
        self._keys.put(digest, who, expiry)
        return who


async def authenticate(auth: Authenticator, token: str | None) -> Principal:
    """The caller of a request: from memory on the event loop, else from the database in a thread."""
    return auth.peek(token) or await run_in_threadpool(auth.load, token)


# -- key management -------------------------------------------------------------------------------
@dataclass(frozen=True)
class KeyInfo:
    key: ApiKey
    brains: dict[str, Access]


def _grants(s, key_ids: list[int]) -> dict[int, dict[str, Access]]:
    out: dict[int, dict[str, Access]] = {i: {} for i in key_ids}
    if key_ids:
        rows = s.execute(
            select(ApiKeyGrant.key_id, Brain.name, ApiKeyGrant.access)
            .join(Brain, Brain.id == ApiKeyGrant.brain_id)
            .where(ApiKeyGrant.key_id.in_(key_ids))
        ).tuples()
        for key_id, brain, access in rows:
            out[key_id][brain] = access
    return out


def _active_admin_keys(s) -> int:
    return s.scalar(select(func.count()).select_from(ApiKey).where(ApiKey.admin, ApiKey.revoked_at.is_(None)))


def create_key(auth: Authenticator, *, name: str, admin: bool, brains: Mapping[str, Access]) -> tuple[KeyInfo, str]:
    """A new key and its plaintext (to show once)."""
    if admin and brains:
        raise Invalid("an admin key may use every brain: give `admin: true` or `brains`, not both")
    if not admin and not brains:
        raise Invalid("a key needs `admin: true` or at least one brain in `brains`")
    key = new_key()
    with auth.db.session() as s:
        if not admin and not auth.admin_key_configured and _active_admin_keys(s) == 0:
            raise Conflict(
                "create an admin key first (or set BRAIN_ADMIN_KEY): with only this key, no one could "
                "manage brains or keys any more"
            )
        ids = dict(s.execute(select(Brain.name, Brain.id).where(Brain.name.in_(list(brains)))).tuples().all())
        missing = sorted(set(brains) - set(ids))
        if missing:
            raise NotFound(f"no brain named {', '.join(map(repr, missing))}")
        row = ApiKey(name=name, prefix=key[:DISPLAY_CHARS], key_hash=hash_key(key), admin=admin,
                     created_at=utcnow())
        s.add(row)
        s.flush()
        s.add_all(ApiKeyGrant(key_id=row.id, brain_id=ids[b], access=a) for b, a in brains.items())
    auth.forget()
    log.info("API key %r (%s…) created%s", name, row.prefix, " (admin)" if admin else f" for {dict(brains)}")
    return KeyInfo(row, dict(brains)), key


def list_keys(auth: Authenticator) -> list[KeyInfo]:
    with auth.db.session(read_only=True) as s:
        rows = s.scalars(select(ApiKey).order_by(ApiKey.id)).all()
        grants = _grants(s, [r.id for r in rows])
    return [KeyInfo(r, grants[r.id]) for r in rows]


def revoke_key(auth: Authenticator, key_id: int) -> None:
    """Revoke a key (idempotent). The row stays, so that auth stays on once any key existed."""
    with auth.db.session() as s:
        row = s.get(ApiKey, key_id, with_for_update=True)
        if row is None:
            raise NotFound(f"API key {key_id} not found")
        if row.revoked_at is None:
            if row.admin and not auth.admin_key_configured and _active_admin_keys(s) <= 1:
                raise Conflict(
                    "this is the last admin key and BRAIN_ADMIN_KEY is not set: create another admin key "
                    "first, or no one could manage brains or keys any more"
                )
            row.revoked_at = utcnow()
            log.info("API key %r (%s…) revoked", row.name, row.prefix)
    auth.forget()
