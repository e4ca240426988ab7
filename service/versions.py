"""Immutable, numbered checkpoints of a brain, a movable "current" pointer, promote and retention.

A version is a folder ``<checkpoint_dir>/<brain id>/v<number>/`` holding ``model.safetensors``
(the learner's tensors), optionally ``replay.safetensors`` (a snapshot of the replay buffer) and
``meta.json``. It is written to a temporary folder and renamed into place, and only then recorded in
the ``versions`` table: a crash mid-write leaves the previous version current and readable. Nothing
is pickled; loading uses safetensors only.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from sqlalchemy import select
from sqlalchemy.orm import Session

from models import encoders
from models.learner import Learner
from models.registry import create as create_learner
from service.db import after_commit
from service.locks import Lease, LockLost
from service.tables import Brain, Version

MODEL_FILE = "model.safetensors"
REPLAY_FILE = "replay.safetensors"
META_FILE = "meta.json"


class VersionStore:
    def __init__(self, root: Path, keep: int) -> None:
        self.root = root
        self.keep = keep

    # -- files ------------------------------------------------------------------------------------
    def path(self, brain_id: int, number: int) -> Path:
        return self.root / str(brain_id) / f"v{number:06d}"

    def write(
        self,
        brain_id: int,
        number: int,
        learner: Learner,
        replay: dict[str, torch.Tensor] | None,
        meta: dict,
    ) -> Path:
        final = self.path(brain_id, number)
        tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            state = {k: v.detach().to("cpu").contiguous() for k, v in learner.state_dict().items()}
            save_file(state, tmp / MODEL_FILE)
            if replay is not None:
                save_file({k: v.contiguous() for k, v in replay.items()}, tmp / REPLAY_FILE)
            (tmp / META_FILE).write_text(json.dumps(meta, sort_keys=True))
            for f in tmp.iterdir():
                _fsync(f)
            if final.exists():  # left by a crash before its row was committed: never visible
                shutil.rmtree(final)
            os.replace(tmp, final)
            _fsync(final.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    def load(self, brain: Brain, number: int, device: str = "cpu") -> Learner:
        """The learner of version ``number``, built with the params it was published with (a
        brain's params may have changed since; see ``Learner.reconfigure``)."""
        folder = self.path(brain.id, number)
        meta = json.loads((folder / META_FILE).read_text())
        learner = new_learner(brain, params=meta.get("params", brain.params))
        state = load_file(folder / MODEL_FILE, device=device)
        learner.load_state_dict(state)
        return learner.to(device)

    def load_replay(self, brain_id: int, number: int) -> dict[str, torch.Tensor] | None:
        f = self.path(brain_id, number) / REPLAY_FILE
        return load_file(f) if f.exists() else None

    def remove_brain(self, brain_id: int) -> None:
        shutil.rmtree(self.root / str(brain_id), ignore_errors=True)

    # -- rows -------------------------------------------------------------------------------------
    def publish(
        self,
        session: Session,
        brain: Brain,
        learner: Learner,
        *,
        kind: str,
        lease: Lease | None,
        base: int | None,
        log_position: int,
        samples_learned: int,
        tasks_seen: int,
        stats: dict,
        replay: dict[str, torch.Tensor] | None = None,
    ) -> Version:
        """Write a new version on top of version ``base``, make it current, apply retention.

        ``lease``: the writer's (``service.writer``), ``brain`` read under a row lock in
        ``session``; the publish is refused (:class:`~service.locks.LockLost`) unless the lease
        still holds the brain's fence and ``base`` is still current. Only a brain's first version
        (kind "init", made with the brain) is published without one."""
        _check_writer(brain, lease, base, kind)
        last = session.scalar(
            select(Version.number).where(Version.brain_id == brain.id).order_by(Version.number.desc()).limit(1)
        )
        number = (last or 0) + 1
        stats = {**stats, "replay_snapshot": replay is not None, "base": base,
                 "fence": lease.fence if lease else None, "job": lease.job_id if lease else None}
        meta = {"brain": brain.name, "number": number, "kind": kind, "strategy": brain.strategy,
                "params": brain.params, "log_position": log_position}
        self.write(brain.id, number, learner, replay, meta)
        version = Version(
            brain_id=brain.id, number=number, kind=kind, log_position=log_position,
            samples_learned=samples_learned, tasks_seen=tasks_seen, stats=stats,
        )
        session.add(version)
        brain.current_version = number
        session.flush()
        self._retain(session, brain)
        return version

    def publish_over_current(
        self,
        session: Session,
        brain: Brain,
        learner: Learner,
        *,
        kind: str,
        lease: Lease,
        base: int | None,
        stats: dict,
        replay: dict[str, torch.Tensor] | None = None,
    ) -> Version:
        """Publish a learner changed without learning from the log (sleep, meta-training,
        reconfiguration) on top of version ``base``: log position, samples learned and tasks seen
        carry over from it."""
        _check_writer(brain, lease, base, kind)
        current = session.scalar(
            select(Version).where(Version.brain_id == brain.id, Version.number == base)
        )
        return self.publish(
            session, brain, learner, kind=kind, lease=lease, base=base, log_position=current.log_position,
            samples_learned=current.samples_learned, tasks_seen=current.tasks_seen, stats=stats,
            replay=replay,
        )

    def promote(self, session: Session, brain: Brain, number: int) -> Version | None:
        version = session.scalar(
            select(Version).where(Version.brain_id == brain.id, Version.number == number)
        )
        if version is None:
            return None
        version.promoted = True
        brain.current_version = number
        return version

    def latest_replay_snapshot(self, session: Session, brain: Brain) -> dict[str, torch.Tensor] | None:
        numbers = session.scalars(
            select(Version.number).where(Version.brain_id == brain.id).order_by(Version.number.desc())
        )
        for number in numbers:
            snap = self.load_replay(brain.id, number)
            if snap is not None:
                return snap
        return None

    def _retain(self, session: Session, brain: Brain) -> None:
        """Keep the last ``keep`` versions, every promoted one, the current one and the newest
        one holding a replay snapshot; delete the rest (rows and files)."""
        versions = session.scalars(
            select(Version).where(Version.brain_id == brain.id).order_by(Version.number.desc())
        ).all()
        newest_snapshot = next((v.number for v in versions if v.stats.get("replay_snapshot")), None)
        for i, v in enumerate(versions):
            if i < self.keep or v.promoted or v.number in (brain.current_version, newest_snapshot):
                continue
            session.delete(v)
            doomed = self.path(brain.id, v.number)
            after_commit(session, lambda doomed=doomed: shutil.rmtree(doomed, ignore_errors=True))


def _check_writer(brain: Brain, lease: Lease | None, base: int | None, kind: str) -> None:
    if lease is None:
        assert kind == "init", "every version but a brain's first is published by a fenced writer"
        return
    lease.check(brain.writer_fence)
    if brain.current_version != base:
        raise LockLost(f"brain {brain.id}: current version moved from {base} to {brain.current_version} "
                       "under this writer")


def new_learner(brain: Brain, params: dict | None = None) -> Learner:
    # flatten / pixels pass the input through: the learner may use its shape (an image's)
    raw = isinstance(encoders.get(brain.encoder), encoders.Identity)
    return create_learner(
        brain.strategy,
        input_dim=input_dim(brain.input_shape, brain.encoder),
        num_classes=brain.max_labels,
        seed=brain.seed,
        params=brain.params if params is None else params,
        input_shape=list(brain.input_shape) if raw else None,
        encoded=not raw,
    )


def input_dim(shape: list[int], encoder: str | None = None) -> int:
    """The learner's input size: what ``encoder`` makes of inputs of ``shape`` (without an encoder,
    or with ``flatten`` / ``pixels``: ``prod(shape)``, the raw size)."""
    if encoder is not None:
        return encoders.get(encoder).output_dim(shape)
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
