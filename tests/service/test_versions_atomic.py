"""Atomic versions: a version's blobs are complete (files: synced) before its row can be seen, and a
crash at any point of a publish leaves the previous version current and readable.

The crash is simulated in-process (a monkeypatched failure inside ``VersionStore`` or the blob
store) on the embedded default, with file blobs and with database blobs: the wake job fails, its
transaction rolls back, and whatever it wrote is never served."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service import blobs as blobs_module
from service.app import create_app
from service.db import upgrade
from service.versions import META_FILE, MODEL_FILE, VersionStore
from tests.conftest import make_settings
from tests.service.test_api import answers, clusters, make_brain, post, predict


@pytest.fixture(params=["files", "database"])
def client(request, tmp_path: Path) -> Iterator[TestClient]:
    settings = make_settings(tmp_path / "var", blobs=request.param)
    upgrade(settings.database_url)
    with TestClient(create_app(settings)) as c:
        yield c


def _state(client: TestClient) -> tuple[int, list[int], int]:
    brain = client.get("/v1/brains/b").json()
    listed = [v["number"] for v in client.get("/v1/brains/b/versions").json()["versions"]]
    return brain["current_version"], listed, brain["samples_learned"]


def _stored(client: TestClient) -> list[str]:
    """The version folders in the blob store, of the one brain."""
    rt = client.app.state.runtime
    with rt.db.session() as s:
        from service.brains import get_brain

        brain_id = get_brain(s, "b").id
    return sorted({key.split("/")[1] for key in rt.blobs.keys(f"{brain_id}/")})


def _brain_dir(client: TestClient) -> Path:
    rt = client.app.state.runtime
    folders = [p for p in rt.settings.checkpoint_dir.iterdir() if p.is_dir()]
    assert len(folders) == 1
    return folders[0]


def _every_listed_version_loads(client: TestClient) -> None:
    from service.brains import get_brain

    rt = client.app.state.runtime
    with rt.db.session() as s:
        brain = get_brain(s, "b")
        s.expunge(brain)
    for v in client.get("/v1/brains/b/versions").json()["versions"]:
        rt.versions.load(brain, v["number"])


@pytest.fixture
def taught(client: TestClient) -> tuple[TestClient, object, dict]:
    make_brain(client)
    xs, ys = clusters(40, ["a", "b"], seed=1)
    assert post(client, "b", "t1", xs, ys).json()["version"] == 2
    return client, xs, predict(client, "b", xs[:10])


def test_a_crash_between_the_blobs_and_the_commit_leaves_the_previous_version_current(
    taught, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, xs, before = taught

    def crash(self, session, brain) -> None:  # runs after the blobs are in place, before the commit
        raise RuntimeError("simulated crash before the commit")

    monkeypatch.setattr(VersionStore, "_retain", crash)
    xs2, ys2 = clusters(20, ["c", "d"], seed=2)
    answer = post(client, "b", "t2", xs2, ys2, ids=[f"n{i}" for i in range(20)]).json()
    assert answer["state"] == "failed"
    # files: version 3's were written, but nothing points at them; database rows: rolled back
    transactional = client.app.state.runtime.blobs.transactional
    assert _stored(client) == (["v000001", "v000002"] if transactional else ["v000001", "v000002", "v000003"])
    assert _state(client) == (2, [1, 2], 40)
    assert answers(predict(client, "b", xs[:10])) == answers(before)  # the previous version, as before
    _every_listed_version_loads(client)

    monkeypatch.undo()  # the next job (here: the client's resend) publishes version 3 over the leftovers
    again = post(client, "b", "t2", xs2, ys2, ids=[f"n{i}" for i in range(20)]).json()
    assert (again["accepted"], again["duplicates"], again["state"]) == (0, 20, "succeeded"), again
    assert _state(client) == (3, [1, 2, 3], 60)  # learned once
    _every_listed_version_loads(client)
    labels = {p["label"] for p in predict(client, "b", xs2[:10])["predictions"]}
    assert labels <= {"c", "d"}


def test_a_crash_while_writing_the_blobs_leaves_no_version(taught, monkeypatch: pytest.MonkeyPatch) -> None:
    client, xs, before = taught
    store = type(client.app.state.runtime.blobs)
    real = store.put

    def half_written(self, key, data, **kwargs):
        real(self, key, data[:100], **kwargs)  # a torn blob
        raise OSError("simulated crash mid-write (disk full)")

    monkeypatch.setattr(store, "put", half_written)
    xs2, ys2 = clusters(20, ["c", "d"], seed=2)
    assert post(client, "b", "t2", xs2, ys2).json()["state"] == "failed"
    assert _stored(client) == ["v000001", "v000002"]  # nothing of v3
    if not client.app.state.runtime.blobs.transactional:
        assert sorted(p.name for p in _brain_dir(client).iterdir()) == ["v000001", "v000002"]  # no tmp file either
    assert _state(client) == (2, [1, 2], 40)
    assert answers(predict(client, "b", xs[:10])) == answers(before)
    _every_listed_version_loads(client)

    monkeypatch.setattr(store, "put", real)
    xs3, ys3 = clusters(10, ["c", "d"], seed=3)
    assert post(client, "b", "t2", xs3, ys3).json()["state"] == "succeeded"
    assert _state(client) == (3, [1, 2, 3], 70)  # the pending 20 and the new 10, once each
    _every_listed_version_loads(client)


def test_files_are_synced_and_renamed_into_place_before_the_row_exists(
    taught, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, _, _ = taught
    if client.app.state.runtime.blobs.transactional:
        pytest.skip("database blobs commit with the row (tests/service/test_blobs.py)")
    events: list[tuple[str, str]] = []
    real_write, real_fsync, real_replace = blobs_module._write_synced, blobs_module._fsync, blobs_module.os.replace

    def write(path: Path, data: bytes) -> None:  # writes and fsyncs the temporary file
        events.append(("write+fsync", Path(path).name.split("-")[1]))
        real_write(path, data)

    def fsync(path: Path) -> None:
        events.append(("fsync", Path(path).name))
        real_fsync(path)

    def replace(src, dst) -> None:
        events.append(("rename", f"{Path(src).name.split('-')[0]}->{Path(dst).parent.name}/{Path(dst).name}"))
        real_replace(src, dst)

    from sqlalchemy.orm import Session

    real_add = Session.add

    def add(self, instance, *args, **kwargs):
        if type(instance).__name__ == "Version":
            events.append(("row", str(instance.number)))
        return real_add(self, instance, *args, **kwargs)

    monkeypatch.setattr(blobs_module, "_write_synced", write)
    monkeypatch.setattr(blobs_module, "_fsync", fsync)
    monkeypatch.setattr(blobs_module.os, "replace", replace)
    monkeypatch.setattr(Session, "add", add)
    xs2, ys2 = clusters(10, ["c", "d"], seed=2)
    assert post(client, "b", "t2", xs2, ys2).json()["version"] == 3
    monkeypatch.undo()
    row = events.index(("row", "3"))
    for name in (MODEL_FILE, META_FILE):  # each file synced under its temporary name, renamed, its folder synced
        rename = events.index(("rename", f".tmp->v000003/{name}"))
        assert events.index(("write+fsync", name)) < rename < row
        assert ("fsync", "v000003") in events[rename:row]
