"""Blobs: bytes by key, in a store that every process of a deployment reaches.

Checkpoints (``service.versions``) and meta-training sets (``service.meta_sets``) live here, so the
full stack needs no disk shared between its processes. Two stores, chosen by ``BRAIN_BLOBS``
(:func:`make_blob_store`):

- :class:`FileBlobs`: files under a folder (the embedded default: ``<data dir>/brains``). A put
  writes a temporary file, syncs it, renames it into place and syncs the folder: a key holds its
  old bytes or its new ones, never a torn file.
- :class:`DatabaseBlobs`: rows of the ``blobs`` table, ``(key, chunk, data)``, the bytes cut into
  chunks of :data:`CHUNK_BYTES` (the full stack's default on Postgres). A get is one ``SELECT``:
  it sees all of a key's chunks or none.

Keys are ``/``-separated paths of ``[A-Za-z0-9._-]`` segments (no segment starts with a dot), e.g.
``"12/v000003/model.safetensors"``.

Transactions. ``put`` and ``delete`` take the caller's ``session`` (``service.db``): a
:attr:`~BlobStore.transactional` store (the database) writes and deletes inside its transaction, so
they become visible with its commit and vanish with its rollback. Files have no transactions: a put
is durable when it returns (whoever records the key commits afterwards, so an uncommitted put is
never referenced), and a delete given a session waits until that session has committed. Without a
session, both happen at once. Nothing here is pickled: a blob is bytes.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from abc import ABC, abstractmethod
from pathlib import Path

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from service.db import READ_ONLY, Database, after_commit, fetch_binary
from service.tables import Blob

_blobs = Blob.__table__  # core statements: no ORM bookkeeping of the rows

CHUNK_BYTES = 8 * 2**20  # a row's share of a blob: bounded statements, far below bytea's 1 GB
_SEGMENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


class BlobMissing(FileNotFoundError):
    """No blob has this key."""


def check_key(key: str, *, folder: bool = False) -> str:
    """``key`` when it is a valid key (``folder``: a prefix ending in ``/``); ValueError otherwise."""
    path = key[:-1] if folder and key.endswith("/") else key
    if (folder and not key.endswith("/")) or not all(_SEGMENT.fullmatch(s) for s in path.split("/")):
        raise ValueError(f"invalid blob {'folder' if folder else 'key'} {key!r}")
    return key


class BlobStore(ABC):
    transactional: bool = False  # writes given a session commit and roll back with it

    @abstractmethod
    def put(self, key: str, data: bytes, *, session: Session | None = None) -> None:
        """Store ``data`` under ``key``, replacing what it held."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The bytes under ``key``; :class:`BlobMissing` when there are none."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def delete(self, *keys: str, session: Session | None = None) -> None:
        """Delete these keys (missing ones are no error)."""

    @abstractmethod
    def delete_folder(self, folder: str, *, session: Session | None = None) -> None:
        """Delete every key under ``folder`` (a prefix ending in ``/``)."""

    @abstractmethod
    def keys(self, folder: str) -> list[str]:
        """Every key under ``folder``, sorted."""


class FileBlobs(BlobStore):
    """Files under ``root``: the key is the path below it."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, data: bytes, *, session: Session | None = None) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp-{path.name}-{uuid.uuid4().hex[:8]}")
        try:
            _write_synced(tmp, data)
            os.replace(tmp, path)
            _fsync(path.parent)  # the rename is durable before anyone records the key
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            raise BlobMissing(key) from None

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete(self, *keys: str, session: Session | None = None) -> None:
        paths = [self.path(k) for k in keys]
        if session is not None:
            after_commit(session, lambda: self._unlink(paths))
        else:
            self._unlink(paths)

    def delete_folder(self, folder: str, *, session: Session | None = None) -> None:
        path = self.root / check_key(folder, folder=True)
        if session is not None:
            after_commit(session, lambda: shutil.rmtree(path, ignore_errors=True))
        else:
            shutil.rmtree(path, ignore_errors=True)

    def keys(self, folder: str) -> list[str]:
        base = self.root / check_key(folder, folder=True)
        if not base.is_dir():
            return []
        found = []
        for path in base.rglob("*"):
            rel = path.relative_to(self.root).as_posix()
            if path.is_file() and not any(s.startswith(".") for s in rel.split("/")):
                found.append(rel)
        return sorted(found)

    def _unlink(self, paths: list[Path]) -> None:
        for path in paths:
            path.unlink(missing_ok=True)
        for parent in {p.parent for p in paths}:  # a version's folder goes with its last file
            try:
                if parent != self.root:
                    parent.rmdir()
            except OSError:
                pass


class DatabaseBlobs(BlobStore):
    """Chunked rows of the ``blobs`` table, in the service's own database."""

    transactional = True

    def __init__(self, db: Database, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.db, self.chunk_bytes = db, chunk_bytes
        self._reader = db.engine.execution_options(**{READ_ONLY: True})

    def put(self, key: str, data: bytes, *, session: Session | None = None) -> None:
        check_key(key)
        view = memoryview(data)
        rows = [{"key": key, "chunk": i, "data": bytes(view[at:at + self.chunk_bytes])}
                for i, at in enumerate(range(0, max(len(view), 1), self.chunk_bytes))]
        with self._writing(session) as conn:
            conn.execute(delete(_blobs).where(_blobs.c.key == key))
            for row in rows:  # one statement a chunk: at most chunk_bytes in flight
                conn.execute(insert(_blobs), row)

    def get(self, key: str) -> bytes:
        check_key(key)
        with self._reader.connect() as conn:
            chunks = [row.data for row in fetch_binary(conn, select(_blobs.c.data).where(_blobs.c.key == key)
                                                       .order_by(_blobs.c.chunk))]
        if not chunks:
            raise BlobMissing(key)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def exists(self, key: str) -> bool:
        check_key(key)
        with self._reader.connect() as conn:
            return conn.scalar(select(_blobs.c.chunk).where(_blobs.c.key == key, _blobs.c.chunk == 0)) is not None

    def delete(self, *keys: str, session: Session | None = None) -> None:
        for key in keys:
            check_key(key)
        if keys:
            with self._writing(session) as conn:
                conn.execute(delete(_blobs).where(_blobs.c.key.in_(keys)))

    def delete_folder(self, folder: str, *, session: Session | None = None) -> None:
        check_key(folder, folder=True)
        with self._writing(session) as conn:
            conn.execute(delete(_blobs).where(_blobs.c.key.startswith(folder, autoescape=True)))

    def keys(self, folder: str) -> list[str]:
        check_key(folder, folder=True)
        with self._reader.connect() as conn:
            return list(conn.scalars(select(_blobs.c.key).where(_blobs.c.key.startswith(folder, autoescape=True),
                                                            _blobs.c.chunk == 0).order_by(_blobs.c.key)))

    def _writing(self, session: Session | None):
        """The caller's transaction, or one of our own (committed on leaving it)."""
        if session is not None:
            return _Borrowed(session)
        return self.db.engine.begin()


class _Borrowed:
    """``session``'s connection, as a context that neither commits nor closes it."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def __enter__(self):
        return self.session

    def __exit__(self, *exc: object) -> None:
        return None


def make_blob_store(backend: str, *, root: Path, db: Database) -> BlobStore:
    """The store ``backend`` names (``Settings.blob_backend``): "files" under ``root``, or
    "database" in ``db``."""
    if backend == "files":
        return FileBlobs(root)
    if backend == "database":
        return DatabaseBlobs(db)
    raise ValueError(f"unknown blob store {backend!r}")


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
