"""The version store: atomic publication, retention, promotion, nothing pickled."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from sqlalchemy import select

from service import brains, schemas
from service.runtime import build_runtime
from service.tables import Brain, Version
from service.writer import locked_brain, writer


@pytest.fixture
def rt(settings):
    settings.keep_versions = 3
    runtime = build_runtime(settings, executor=False)
    yield runtime
    runtime.close()


def new_brain(rt, name: str = "v") -> int:
    body = schemas.BrainCreate(name=name, input=schemas.InputSpec(kind="vector", shape=[4]), params={"layers": [{"hidden": 32, "k": 4}]})
    return brains.create_brain(rt, body=body).id


def publish(rt, brain_id: int, **kw):
    with writer(rt, brain_id) as lease, rt.db.session() as s:
        brain = locked_brain(s, lease)
        learner = rt.versions.load(brain, brain.current_version)
        return rt.versions.publish(s, brain, learner, kind="wake", lease=lease, base=brain.current_version,
                                   log_position=0, samples_learned=0,
                                   tasks_seen=0, stats={}, **kw).number


def test_files_are_tensors_and_json(rt) -> None:
    brain_id = new_brain(rt)
    path = rt.versions.path(brain_id, 1)
    assert sorted(p.name for p in path.iterdir()) == ["meta.json", "model.safetensors"]
    assert all(isinstance(t, torch.Tensor) for t in load_file(path / "model.safetensors").values())
    assert json.loads((path / "meta.json").read_text())["number"] == 1


def test_crash_mid_write_leaves_previous_version(rt, monkeypatch) -> None:
    brain_id = new_brain(rt)
    from service import versions

    calls = {"n": 0}
    real = versions.save_file

    def failing(tensors, path, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:  # the model is written, the replay snapshot is not
            raise OSError("disk full")
        return real(tensors, path, *a, **k)

    monkeypatch.setattr(versions, "save_file", failing)
    with pytest.raises(OSError):
        publish(rt, brain_id, replay={"x": torch.zeros(1, 4), "y": torch.zeros(1, dtype=torch.long), "seen": torch.tensor(1)})
    with rt.db.session() as s:
        brain = s.get(Brain, brain_id)
        assert brain.current_version == 1
        assert s.scalars(select(Version.number).where(Version.brain_id == brain_id)).all() == [1]
        rt.versions.load(brain, 1)  # still readable
    folder = rt.versions.root / str(brain_id)
    assert [p.name for p in folder.iterdir()] == ["v000001"]  # no half-written folder left


def test_retention_keeps_last_promoted_and_current(rt) -> None:
    brain_id = new_brain(rt)
    for _ in range(3):
        publish(rt, brain_id)
    with rt.db.session() as s:
        rt.versions.promote(s, s.get(Brain, brain_id), 2)
    for _ in range(4):
        publish(rt, brain_id)
    with rt.db.session() as s:
        kept = s.scalars(select(Version.number).where(Version.brain_id == brain_id).order_by(Version.number)).all()
    assert kept == [2, 6, 7, 8]
    on_disk = sorted(p.name for p in (rt.versions.root / str(brain_id)).iterdir())
    assert on_disk == ["v000002", "v000006", "v000007", "v000008"]
