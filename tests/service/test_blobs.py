"""The blob stores (``service.blobs``): files, and chunked rows of the database (SQLite and Postgres),
keep the same contract: put/get/exists/delete by key, folders, and transactions where they have them."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from service.blobs import BlobMissing, BlobStore, DatabaseBlobs, FileBlobs, check_key
from service.db import Database, upgrade
from tests.conftest import make_settings

STORES = ["files", "sqlite", "postgres"]
# the keys' top folder (a brain id in the service): unique, as the session's Postgres database is shared
T = f"t{uuid.uuid4().hex[:8]}"


def _store(kind: str, tmp_path: Path, request: pytest.FixtureRequest, chunk_bytes: int = 7) -> BlobStore:
    if kind == "files":
        return FileBlobs(tmp_path / "blobs")
    url = request.getfixturevalue("pg_url") if kind == "postgres" else None
    settings = make_settings(tmp_path / "var", database_url=url)
    upgrade(settings.database_url)
    database = Database(settings)
    request.addfinalizer(database.dispose)
    store = DatabaseBlobs(database, chunk_bytes=chunk_bytes)
    for folder in (f"{T}1/", f"{T}10/"):  # left by the previous test of this run (Postgres: one database)
        store.delete_folder(folder)
    return store


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    return _store(request.param, tmp_path, request)


def test_put_get_exists_delete(store: BlobStore) -> None:
    data = bytes(range(256)) * 3  # several chunks of 7 bytes, the last one short
    assert not store.exists(f"{T}1/v000001/model.safetensors")
    with pytest.raises(BlobMissing):
        store.get(f"{T}1/v000001/model.safetensors")
    store.put(f"{T}1/v000001/model.safetensors", data)
    store.put(f"{T}1/v000001/meta.json", b"{}")
    store.put(f"{T}1/empty", b"")
    assert store.get(f"{T}1/v000001/model.safetensors") == data
    assert store.get(f"{T}1/empty") == b"" and store.exists(f"{T}1/empty")
    store.put(f"{T}1/v000001/model.safetensors", b"shorter")  # replaced whole: no chunk of the old left
    assert store.get(f"{T}1/v000001/model.safetensors") == b"shorter"
    assert store.keys(f"{T}1/") == [f"{T}1/empty", f"{T}1/v000001/meta.json", f"{T}1/v000001/model.safetensors"]
    store.delete(f"{T}1/v000001/model.safetensors", f"{T}1/never-there")
    assert not store.exists(f"{T}1/v000001/model.safetensors")
    assert store.keys(f"{T}1/") == [f"{T}1/empty", f"{T}1/v000001/meta.json"]


def test_a_folder_is_its_own_prefix_only(store: BlobStore) -> None:
    store.put(f"{T}1/v000001/meta.json", b"a")
    store.put(f"{T}10/v000001/meta.json", b"b")
    store.put(f"{T}1/meta/x_y.safetensors", b"c")  # "_" is a LIKE wildcard: escaped
    assert store.keys(f"{T}1/") == [f"{T}1/meta/x_y.safetensors", f"{T}1/v000001/meta.json"]
    store.delete_folder(f"{T}1/")
    assert store.keys(f"{T}1/") == [] and store.keys(f"{T}10/") == [f"{T}10/v000001/meta.json"]


@pytest.mark.parametrize("key", ["", "/a", "a//b", "../x", "a/../b", ".tmp", "a/.hidden", "a b", "a/"])
def test_keys_are_checked(key: str) -> None:
    with pytest.raises(ValueError):
        check_key(key)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_database_writes_in_a_session_commit_and_roll_back_with_it(kind: str, tmp_path: Path, request) -> None:
    store = _store(kind, tmp_path, request)
    assert isinstance(store, DatabaseBlobs) and store.transactional
    with pytest.raises(RuntimeError):
        with store.db.session() as s:
            store.put(f"{T}1/a", b"rolled back", session=s)
            raise RuntimeError("the transaction fails")
    assert not store.exists(f"{T}1/a")
    with store.db.session() as s:
        store.put(f"{T}1/a", b"committed", session=s)
    assert store.get(f"{T}1/a") == b"committed"
    with pytest.raises(RuntimeError):
        with store.db.session() as s:
            store.delete(f"{T}1/a", session=s)
            store.delete_folder(f"{T}1/", session=s)
            raise RuntimeError("the transaction fails")
    assert store.get(f"{T}1/a") == b"committed"  # the deletes rolled back
    with store.db.session() as s:
        store.delete_folder(f"{T}1/", session=s)
    assert not store.exists(f"{T}1/a")


def test_file_deletes_in_a_session_wait_for_its_commit(tmp_path: Path, request) -> None:
    files = FileBlobs(tmp_path / "blobs")
    settings = make_settings(tmp_path / "var")
    upgrade(settings.database_url)
    database = Database(settings)
    request.addfinalizer(database.dispose)
    files.put(f"{T}1/v000001/a", b"x")
    with pytest.raises(RuntimeError):
        with database.session() as s:
            files.delete(f"{T}1/v000001/a", session=s)
            files.delete_folder(f"{T}1/", session=s)
            assert files.exists(f"{T}1/v000001/a")  # not before the commit
            raise RuntimeError("the transaction fails")
    assert files.exists(f"{T}1/v000001/a")  # nor after a rollback
    with database.session() as s:
        files.delete(f"{T}1/v000001/a", session=s)
    assert not files.exists(f"{T}1/v000001/a")
    assert not (tmp_path / "blobs" / f"{T}1" / "v000001").exists()  # the emptied folder goes too


def test_file_puts_are_synced_then_renamed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from service import blobs

    events: list[tuple[str, str]] = []
    real_write, real_replace, real_fsync = blobs._write_synced, blobs.os.replace, blobs._fsync
    monkeypatch.setattr(blobs, "_write_synced", lambda p, d: (events.append(("write+fsync", p.name.split("-")[0])),
                                                               real_write(p, d)))
    monkeypatch.setattr(blobs.os, "replace", lambda a, b: (events.append(("rename", Path(b).name)), real_replace(a, b)))
    monkeypatch.setattr(blobs, "_fsync", lambda p: (events.append(("fsync dir", Path(p).name)), real_fsync(p)))
    files = FileBlobs(tmp_path / "blobs")
    files.put(f"{T}1/v000001/model.safetensors", b"x")
    assert events == [("write+fsync", ".tmp"), ("rename", "model.safetensors"), ("fsync dir", "v000001")]
    assert [p.name for p in (tmp_path / "blobs" / f"{T}1" / "v000001").iterdir()] == ["model.safetensors"]


def test_a_torn_file_write_leaves_the_old_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from service import blobs

    files = FileBlobs(tmp_path / "blobs")
    files.put(f"{T}1/a", b"old")

    def torn(path: Path, data: bytes) -> None:
        path.write_bytes(data[:1])
        raise OSError("disk full")

    monkeypatch.setattr(blobs, "_write_synced", torn)
    with pytest.raises(OSError):
        files.put(f"{T}1/a", b"new bytes")
    assert files.get(f"{T}1/a") == b"old"
    assert [p.name for p in (tmp_path / "blobs" / f"{T}1").iterdir()] == ["a"]  # no temporary file left
