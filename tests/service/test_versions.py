"""The version store: atomic publication, retention, promotion, nothing pickled; on every blob store
(files, database rows on SQLite, database rows on Postgres)."""

from __future__ import annotations

import json
import uuid

import pytest
import torch
from safetensors.torch import load
from sqlalchemy import select

from service import brains, schemas
from service.db import upgrade
from service.runtime import build_runtime
from service.tables import Brain, Version
from service.versions import META_FILE, MODEL_FILE, REPLAY_FILE, VersionStore
from service.writer import locked_brain, writer
from tests.conftest import make_settings

STORES = ["files", "sqlite", "postgres"]  # file blobs on SQLite; database blobs on SQLite and on Postgres


@pytest.fixture(params=STORES)
def rt(request, tmp_path):
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    settings = make_settings(tmp_path / "var", database_url=url, keep_versions=3,
                             blobs="files" if request.param == "files" else "database")
    upgrade(settings.database_url)
    runtime = build_runtime(settings, executor=False)
    yield runtime
    runtime.close()


def new_brain(rt, name: str | None = None) -> int:
    body = schemas.BrainCreate(name=name or f"v-{uuid.uuid4().hex[:8]}", input=schemas.InputSpec(kind="vector", shape=[4]),
                               params={"layers": [{"hidden": 32, "k": 4}]})
    return brains.create_brain(rt, body=body).id


def publish(rt, brain_id: int, **kw):
    with writer(rt, brain_id) as lease, rt.db.session() as s:
        brain = locked_brain(s, lease)
        learner = rt.versions.load(brain, brain.current_version)
        return rt.versions.publish(s, brain, learner, kind="wake", lease=lease, base=brain.current_version,
                                   log_position=0, samples_learned=0,
                                   tasks_seen=0, stats={}, **kw).number


def state(rt, brain_id: int) -> tuple[int, list[int]]:
    with rt.db.session() as s:
        numbers = s.scalars(select(Version.number).where(Version.brain_id == brain_id).order_by(Version.number)).all()
        return s.get(Brain, brain_id).current_version, list(numbers)


def brain_row(rt, brain_id: int) -> Brain:
    with rt.db.session() as s:
        brain = s.get(Brain, brain_id)
        s.expunge(brain)
        return brain


def folders(rt, brain_id: int) -> list[str]:
    """The version folders the store holds for the brain."""
    return sorted({key.split("/")[1] for key in rt.blobs.keys(f"{brain_id}/")})


REPLAY = {"x": torch.zeros(1, 4), "y": torch.zeros(1, dtype=torch.long), "seen": torch.tensor(1)}


def test_blobs_are_tensors_and_json(rt) -> None:
    brain_id = new_brain(rt)
    assert rt.blobs.keys(f"{brain_id}/") == [f"{brain_id}/v000001/{META_FILE}", f"{brain_id}/v000001/{MODEL_FILE}"]
    model = load(rt.blobs.get(rt.versions.key(brain_id, 1, MODEL_FILE)))
    assert model and all(isinstance(t, torch.Tensor) for t in model.values())
    assert json.loads(rt.blobs.get(rt.versions.key(brain_id, 1, META_FILE)))["number"] == 1
    if rt.settings.blob_backend == "database":  # nothing on disk: the data dir has no checkpoints
        assert not rt.settings.checkpoint_dir.exists()


def test_crash_mid_write_leaves_previous_version(rt, monkeypatch) -> None:
    """The model's blob is stored, the replay snapshot's put fails: no version 2, and nothing of it left."""
    brain_id = new_brain(rt)
    real = type(rt.blobs).put

    def failing(self, key, data, **kw):
        if key.endswith(REPLAY_FILE):
            raise OSError("disk full")
        return real(self, key, data, **kw)

    monkeypatch.setattr(type(rt.blobs), "put", failing)
    with pytest.raises(OSError):
        publish(rt, brain_id, replay=REPLAY)
    assert state(rt, brain_id) == (1, [1])
    rt.versions.load(brain_row(rt, brain_id), 1)  # still readable
    assert folders(rt, brain_id) == ["v000001"]  # no half-written version left


def test_a_failure_between_the_blobs_and_the_commit_leaves_nothing_visible(rt, monkeypatch) -> None:
    brain_id = new_brain(rt)
    before = rt.versions.load(brain_row(rt, brain_id), 1).state_dict()

    def crash(self, session, brain) -> None:  # after the blobs and the row, before the commit
        raise RuntimeError("simulated crash before the commit")

    monkeypatch.setattr(VersionStore, "_retain", crash)
    with pytest.raises(RuntimeError):
        publish(rt, brain_id, replay=REPLAY)
    monkeypatch.undo()
    assert state(rt, brain_id) == (1, [1])
    if rt.blobs.transactional:  # rolled back with the row
        assert folders(rt, brain_id) == ["v000001"]
    after = rt.versions.load(brain_row(rt, brain_id), 1).state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the old version still serves
    # the next publish takes number 2 over whatever was left, without the failed one's replay snapshot
    assert publish(rt, brain_id) == 2
    assert state(rt, brain_id) == (2, [1, 2])
    rt.versions.load(brain_row(rt, brain_id), 2)
    assert rt.versions.load_replay(brain_id, 2) is None
    assert rt.blobs.keys(f"{brain_id}/v000002/") == [rt.versions.key(brain_id, 2, n) for n in (META_FILE, MODEL_FILE)]


def test_retention_keeps_last_promoted_and_current_and_deletes_the_rest(rt) -> None:
    brain_id = new_brain(rt)
    for _ in range(3):
        publish(rt, brain_id)
    with rt.db.session() as s:
        rt.versions.promote(s, s.get(Brain, brain_id), 2)
    for _ in range(4):
        publish(rt, brain_id, replay=REPLAY)
    assert state(rt, brain_id) == (8, [2, 6, 7, 8])
    assert folders(rt, brain_id) == ["v000002", "v000006", "v000007", "v000008"]
    assert rt.versions.load_replay(brain_id, 8) is not None


def test_deleting_a_brain_deletes_its_blobs(rt) -> None:
    brain_id, other = new_brain(rt), new_brain(rt)
    publish(rt, brain_id, replay=REPLAY)
    rt.blobs.put(f"{brain_id}/meta/{uuid.uuid4().hex}.safetensors", b"a meta-training set")
    name = brain_row(rt, brain_id).name
    brains.delete_brain(rt, name=name)
    assert rt.blobs.keys(f"{brain_id}/") == []
    assert folders(rt, other) == ["v000001"]  # another brain's are untouched
    if rt.settings.blob_backend == "files":
        assert not (rt.settings.checkpoint_dir / str(brain_id)).exists()


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_brain_migrate_copies_the_version_folders_of_file_blobs_into_the_database(
    database: str, request, tmp_path, monkeypatch
) -> None:
    """An older deployment kept its versions as folders in the data dir. ``brain migrate`` (as ``brain
    serve``) copies those with a row into database blobs, once; then a process with an empty data
    dir loads every one of them, replay snapshots and pending meta-training sets included."""
    from service import cli

    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    url = request.getfixturevalue("pg_url") if database == "postgres" else f"sqlite:///{tmp_path / 'brain.db'}"
    old = make_settings(old_dir, database_url=url, blobs="files")
    upgrade(url)
    rt = build_runtime(old, executor=False)
    try:
        brain_id = new_brain(rt)
        publish(rt, brain_id, replay=REPLAY)
        publish(rt, brain_id)
        meta_set = f"{brain_id}/meta/{uuid.uuid4().hex}.safetensors"
        rt.blobs.put(meta_set, b"a pending meta-training set")
        rt.blobs.put(f"{brain_id}/v000009/{MODEL_FILE}", b"left by a crash: no row")
        expected = {n: rt.versions.load(brain_row(rt, brain_id), n).state_dict() for n in (1, 2, 3)}
    finally:
        rt.close()

    monkeypatch.setenv("BRAIN_DATABASE_URL", url)
    monkeypatch.setenv("BRAIN_BLOBS", "auto" if database == "postgres" else "database")
    monkeypatch.setenv("BRAIN_DATA_DIR", str(old_dir))
    cli.migrate(old_dir)
    assert cli.import_checkpoints(make_settings(old_dir, database_url=url, blobs="database")) == 0  # once

    rt = build_runtime(make_settings(new_dir, database_url=url, blobs="database"), executor=False)
    try:
        brain = brain_row(rt, brain_id)
        for number, tensors in expected.items():
            loaded = rt.versions.load(brain, number).state_dict()
            assert all(torch.equal(tensors[k], loaded[k]) for k in tensors)
        assert torch.equal(rt.versions.load_replay(brain_id, 2)["x"], REPLAY["x"])
        assert rt.blobs.get(meta_set) == b"a pending meta-training set"
        assert folders(rt, brain_id) == ["meta", "v000001", "v000002", "v000003"]  # not the row-less v9
        assert not new_dir.exists() or not (new_dir / "brains").exists()
    finally:
        rt.close()
