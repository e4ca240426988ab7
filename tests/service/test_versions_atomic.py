"""Atomic versions: a version's files are complete and synced before its row can be seen, and a
crash at any point of a publish leaves the previous version current and readable.

The crash is simulated in-process (a monkeypatched failure inside ``VersionStore``) on the embedded
default: the wake job fails, its transaction rolls back, and whatever it wrote is never served."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service import versions as versions_module
from service.versions import META_FILE, MODEL_FILE, VersionStore
from tests.service.test_api import clusters, make_brain, post, predict


def _state(client: TestClient) -> tuple[int, list[int], int]:
    brain = client.get("/v1/brains/b").json()
    listed = [v["number"] for v in client.get("/v1/brains/b/versions").json()["versions"]]
    return brain["current_version"], listed, brain["samples_learned"]


def _brain_dir(client: TestClient) -> Path:
    rt = client.app.state.runtime
    folders = [p for p in rt.versions.root.iterdir() if p.is_dir()]
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


def test_a_crash_between_the_files_and_the_commit_leaves_the_previous_version_current(
    taught, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, xs, before = taught

    def crash(self, session, brain) -> None:  # runs after the files are in place, before the commit
        raise RuntimeError("simulated crash before the commit")

    monkeypatch.setattr(VersionStore, "_retain", crash)
    xs2, ys2 = clusters(20, ["c", "d"], seed=2)
    answer = post(client, "b", "t2", xs2, ys2, ids=[f"n{i}" for i in range(20)]).json()
    assert answer["state"] == "failed"
    # the files of version 3 were written, but nothing points at them
    assert (_brain_dir(client) / "v000003" / MODEL_FILE).is_file()
    assert _state(client) == (2, [1, 2], 40)
    assert predict(client, "b", xs[:10]) == before  # the previous version, as before
    _every_listed_version_loads(client)

    monkeypatch.undo()  # the next job (here: the client's resend) publishes version 3 over the leftovers
    again = post(client, "b", "t2", xs2, ys2, ids=[f"n{i}" for i in range(20)]).json()
    assert (again["accepted"], again["duplicates"], again["state"]) == (0, 20, "succeeded"), again
    assert _state(client) == (3, [1, 2, 3], 60)  # learned once
    _every_listed_version_loads(client)
    labels = {p["label"] for p in predict(client, "b", xs2[:10])["predictions"]}
    assert labels <= {"c", "d"}


def test_a_crash_while_writing_the_files_leaves_no_version_folder(taught, monkeypatch: pytest.MonkeyPatch) -> None:
    client, xs, before = taught
    real = versions_module.save_file

    def half_written(tensors, path, *args, **kwargs):
        Path(path).write_bytes(b"\0" * 100)  # a torn file
        raise OSError("simulated crash mid-write (disk full)")

    monkeypatch.setattr(versions_module, "save_file", half_written)
    xs2, ys2 = clusters(20, ["c", "d"], seed=2)
    assert post(client, "b", "t2", xs2, ys2).json()["state"] == "failed"
    assert sorted(p.name for p in _brain_dir(client).iterdir()) == ["v000001", "v000002"]  # no tmp, no v3
    assert _state(client) == (2, [1, 2], 40)
    assert predict(client, "b", xs[:10]) == before
    _every_listed_version_loads(client)

    monkeypatch.setattr(versions_module, "save_file", real)
    xs3, ys3 = clusters(10, ["c", "d"], seed=3)
    assert post(client, "b", "t2", xs3, ys3).json()["state"] == "succeeded"
    assert _state(client) == (3, [1, 2, 3], 70)  # the pending 20 and the new 10, once each
    _every_listed_version_loads(client)


def test_files_are_synced_and_renamed_into_place_before_the_row_exists(
    taught, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, _, _ = taught
    events: list[tuple[str, str]] = []
    real_fsync, real_replace, real_add = versions_module._fsync, versions_module.os.replace, None

    def fsync(path: Path) -> None:
        events.append(("fsync", Path(path).name))
        real_fsync(path)

    def replace(src, dst) -> None:
        events.append(("rename", f"{Path(src).name.split('-')[0]}->{Path(dst).name}"))
        real_replace(src, dst)

    from sqlalchemy.orm import Session

    real_add = Session.add

    def add(self, instance, *args, **kwargs):
        if type(instance).__name__ == "Version":
            events.append(("row", str(instance.number)))
        return real_add(self, instance, *args, **kwargs)

    monkeypatch.setattr(versions_module, "_fsync", fsync)
    monkeypatch.setattr(versions_module.os, "replace", replace)
    monkeypatch.setattr(Session, "add", add)
    xs2, ys2 = clusters(10, ["c", "d"], seed=2)
    assert post(client, "b", "t2", xs2, ys2).json()["version"] == 3
    monkeypatch.undo()
    order = [e for e in events if e[0] in ("fsync", "rename", "row")]
    synced = {name for kind, name in order[: order.index(("rename", ".tmp->v000003"))] if kind == "fsync"}
    assert {MODEL_FILE, META_FILE} <= synced  # every file synced under its temporary name
    assert order.index(("rename", ".tmp->v000003")) < order.index(("fsync", _brain_dir(client).name))
    assert order.index(("fsync", _brain_dir(client).name)) < order.index(("row", "3"))  # the rename is durable first
