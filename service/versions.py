"""Immutable, numbered checkpoints of a brain, a movable "current" pointer, promote and retention.

A version is three blobs (``service.blobs``) under ``<brain id>/v<number>/``: ``model.safetensors``
(the learner's tensors), optionally ``replay.safetensors`` (a snapshot of the replay buffer) and
``meta.json``. They are written before the version's row, in the same transaction when the blob
store is the database (the full stack's default), and only the row makes a version visible: a crash
mid-write leaves the previous version current and readable. With file blobs (the embedded default,
``<data dir>/brains/<brain id>/v<number>/``, the layout of older releases) each file is synced and
renamed into place before the row commits, and a failed write removes what it wrote. Nothing is
pickled; loading uses safetensors only.

Older full-stack deployments kept the folders on a shared disk; :func:`import_folders` copies them
into the database (``brain migrate`` and ``brain serve`` run it).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load, save
from sqlalchemy import select
from sqlalchemy.orm import Session

from models import encoders
from models.learner import Learner
from models.registry import create as create_learner
from service.blobs import BlobMissing, BlobStore, FileBlobs
from service.db import Database
from service.locks import Lease, LockLost
from service.tables import Brain, Version

log = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
REPLAY_FILE = "replay.safetensors"
META_FILE = "meta.json"
FILES = (MODEL_FILE, REPLAY_FILE, META_FILE)
MERGEABLE = "mergeable"  # a version's stats record whether its learner can merge wake statistics


class VersionStore:
    def __init__(self, blobs: BlobStore, keep: int) -> None:
        self.blobs = blobs
        self.keep = keep

    # -- blobs ------------------------------------------------------------------------------------
    @staticmethod
    def folder(brain_id: int, number: int) -> str:
        return f"{brain_id}/v{number:06d}/"

    def key(self, brain_id: int, number: int, name: str) -> str:
        return self.folder(brain_id, number) + name

    def write(
        self,
        brain_id: int,
        number: int,
        learner: Learner,
        replay: dict[str, torch.Tensor] | None,
        meta: dict,
        *,
        session: Session | None = None,
    ) -> list[str]:
        """Store the version's blobs (in ``session``'s transaction when the store has them); their keys."""
        state = {k: v.detach().to("cpu").contiguous() for k, v in learner.state_dict().items()}
        blobs = {MODEL_FILE: save(state)}
        if replay is not None:
            blobs[REPLAY_FILE] = save({k: v.contiguous() for k, v in replay.items()})
        blobs[META_FILE] = json.dumps(meta, sort_keys=True).encode()
        folder = self.folder(brain_id, number)
        if not self.blobs.transactional:  # left by a crash before its row was committed: never visible
            self.blobs.delete_folder(folder)
        try:
            for name, data in blobs.items():
                self.blobs.put(folder + name, data, session=session)
        except BaseException:
            if not self.blobs.transactional:  # the database's rollback takes them away
                self.blobs.delete_folder(folder)
            raise
        return [folder + name for name in blobs]

    def load(self, brain: Brain, number: int, device: str = "cpu") -> Learner:
        """The learner of version ``number``, built with the params it was published with (a
        brain's params may have changed since; see ``Learner.reconfigure``).
        :class:`~service.blobs.BlobMissing` (a FileNotFoundError) when the version has no blobs."""
        meta = json.loads(self.blobs.get(self.key(brain.id, number, META_FILE)))
        learner = new_learner(brain, params=meta.get("params", brain.params))
        learner.load_state_dict(load(self.blobs.get(self.key(brain.id, number, MODEL_FILE))))
        return learner.to(device)

    def load_replay(self, brain_id: int, number: int) -> dict[str, torch.Tensor] | None:
        try:
            return load(self.blobs.get(self.key(brain_id, number, REPLAY_FILE)))
        except BlobMissing:
            return None

    def remove_brain(self, brain_id: int, *, session: Session | None = None) -> None:
        """Delete the brain's blobs (its versions and meta-training sets), with ``session``'s commit."""
        self.blobs.delete_folder(f"{brain_id}/", session=session)

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
                 "fence": lease.fence if lease else None, "job": lease.job_id if lease else None,
                 MERGEABLE: learner.mergeable()}
        meta = {"brain": brain.name, "number": number, "kind": kind, "strategy": brain.strategy,
                "params": brain.params, "log_position": log_position}
        self.write(brain.id, number, learner, replay, meta, session=session)
        version = Version(
            brain_id=brain.id, number=number, kind=kind, log_position=log_position,
            samples_learned=samples_learned, tasks_seen=tasks_seen, stats=stats,
        )
        session.add(version)
        brain.current_version = number
        session.flush()
        self._retain(session, brain)
        return version

    def mergeable(self, session: Session, brain: Brain) -> bool:
        """Whether the learner of ``brain``'s current version can merge wake statistics
        (``Learner.mergeable``), as its publish recorded, without loading it; a version published
        before that record is loaded to ask. False when there is none or it has no blobs."""
        if brain.current_version is None:
            return False
        stats = session.scalar(select(Version.stats).where(Version.brain_id == brain.id,
                                                          Version.number == brain.current_version))
        if stats is not None and MERGEABLE in stats:
            return bool(stats[MERGEABLE])
        try:
            return self.load(brain, brain.current_version).mergeable()
        except FileNotFoundError:
            return False

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

    def remove(self, session: Session, brain_id: int, numbers: list[int]) -> None:
        """Delete versions ``numbers`` of the brain, promoted or not: rows and blobs, with
        ``session``'s commit (exact unlearning: versions that hold forgotten samples)."""
        if not numbers:
            return
        for v in session.scalars(select(Version).where(Version.brain_id == brain_id, Version.number.in_(numbers))):
            session.delete(v)
        for n in numbers:
            self.blobs.delete_folder(self.folder(brain_id, n), session=session)

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
        one holding a replay snapshot; delete the rest (rows and blobs, with the commit)."""
        versions = session.scalars(
            select(Version).where(Version.brain_id == brain.id).order_by(Version.number.desc())
        ).all()
        newest_snapshot = next((v.number for v in versions if v.stats.get("replay_snapshot")), None)
        for i, v in enumerate(versions):
            if i < self.keep or v.promoted or v.number in (brain.current_version, newest_snapshot):
                continue
            session.delete(v)
            self.blobs.delete(*(self.key(brain.id, v.number, name) for name in FILES), session=session)


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


def import_folders(db: Database, blobs: BlobStore, root: Path) -> int:
    """Copy the version folders (and pending meta-training sets) that file blobs left under
    ``root`` into ``blobs``: every version that has a row and whose model ``blobs`` lacks, each in
    one transaction. Idempotent (what is there already is skipped); the folders are left in place.
    The number of versions copied."""
    if isinstance(blobs, FileBlobs) and blobs.root.resolve() == root.resolve() or not root.is_dir():
        return 0
    source = FileBlobs(root)
    with db.session(read_only=True) as s:
        rows = s.execute(select(Version.brain_id, Version.number).order_by(Version.brain_id, Version.number)).all()
        brain_ids = list(s.scalars(select(Brain.id)))
    copied = 0
    for brain_id, number in rows:
        folder = VersionStore.folder(brain_id, number)
        keys = source.keys(folder)
        if not keys or blobs.exists(folder + MODEL_FILE):
            continue
        with db.session() as s:
            for key in keys:
                blobs.put(key, source.get(key), session=s)
        copied += 1
    for brain_id in brain_ids:  # sets of meta-train jobs still queued
        for key in source.keys(f"{brain_id}/meta/"):
            if not blobs.exists(key):
                blobs.put(key, source.get(key))
    if copied:
        log.info("copied %d version folders from %s into the blob store", copied, root)
    return copied
