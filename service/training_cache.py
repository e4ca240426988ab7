"""The learner a process last trained, per brain: saves a checkpoint read per job.

A learner is reused only for the same brain (its id and creation time: SQLite reuses the id of a
deleted brain) whose current version is still the one the learner was published as.
``checkout`` removes it, and only a job that published (or found nothing to learn) checks it in
again, so a learner left half-updated by a failed job is never reused. Deleting a brain forgets it.
"""

from __future__ import annotations

import threading
from datetime import datetime

from models.learner import Learner
from service.tables import Brain
from service.versions import VersionStore


class TrainingCache:
    def __init__(self) -> None:
        self._entries: dict[int, tuple[datetime, int, Learner]] = {}  # id -> (created_at, version, learner)
        self._lock = threading.Lock()

    def checkout(self, versions: VersionStore, brain: Brain, device: str) -> Learner:
        with self._lock:
            entry = self._entries.pop(brain.id, None)
        if entry is not None and entry[:2] == (brain.created_at, brain.current_version):
            return entry[2]
        return versions.load(brain, brain.current_version, device=device)

    def checkin(self, brain: Brain, version: int, learner: Learner) -> None:
        with self._lock:
            self._entries[brain.id] = (brain.created_at, version, learner)

    def forget(self, brain_id: int) -> None:
        with self._lock:
            self._entries.pop(brain_id, None)
