"""Which brains changed: committed changes reach every process that serves them, without polling.

A :class:`BrainChanges` is attached to a process's session factory. When a transaction that
touched a brain (its row, a task, a version, a sample) commits, the brain's id is announced: at
once to the listeners of this process, and, on the full stack, to every other process through the
Redis channel :data:`CHANNEL` (a Celery worker publishing a version tells the API processes).

The serving cache (``service.serving``) listens, so predictions skip the database while nothing
changed and see a new version as soon as it is committed. A listener that hears ``None`` must
forget everything: the subscription was broken and messages may have been lost.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections.abc import Callable
from itertools import chain

from redis.exceptions import RedisError
from sqlalchemy.orm import Session, sessionmaker

from service.db import on_commit
from service.tables import Brain

log = logging.getLogger(__name__)

CHANNEL = "plastic-brain:brain-changes"
_PENDING = "changed_brains"

Listener = Callable[[int | None], None]


class BrainChanges:
    def __init__(self, redis: object | None = None) -> None:
        self.redis = redis
        self.origin = uuid.uuid4().hex  # this process's messages are not heard twice
        self._listeners: list[Listener] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- collecting ---------------------------------------------------------------------------------
    def attach(self, sessions: sessionmaker) -> None:
        on_commit(sessions, _PENDING, empty=set, collect=self._collect, committed=self._committed)

    @staticmethod
    def _collect(session: Session, ids: set[int]) -> None:
        for obj in chain(session.new, session.dirty, session.deleted):
            brain_id = obj.id if isinstance(obj, Brain) else getattr(obj, "brain_id", None)
            if brain_id is not None:
                ids.add(int(brain_id))

    def _committed(self, ids: set[int]) -> None:
        if ids:
            self.announce(ids)

    # -- announcing ---------------------------------------------------------------------------------
    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def announce(self, ids: set[int] | list[int]) -> None:
        self.tell(ids)
        if self.redis is None:
            return
        try:
            self.redis.publish(CHANNEL, f"{self.origin} {','.join(map(str, sorted(ids)))}")
        except (RedisError, OSError) as exc:  # the commit stands; the others catch up when they resubscribe
            log.warning("could not announce brain changes %s: %s", sorted(ids), exc)

    def tell(self, ids: set[int] | list[int] | None) -> None:
        """Tell this process's listeners (of changes committed here, or heard from another process)."""
        for listener in self._listeners:
            for brain_id in ids if ids is not None else [None]:
                try:
                    listener(brain_id)
                except Exception:
                    log.exception("brain change listener failed")

    # -- hearing other processes ----------------------------------------------------------------------
    def subscribe(self) -> None:
        """Hear other processes' announcements in a background thread (full stack only)."""
        if self.redis is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._hear, name="brain-changes", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=3)  # it checks the flag at least once a second

    def _hear(self) -> None:
        delay = 0.1
        while not self._stop.is_set():
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(CHANNEL)
                self.tell(None)  # anything may have changed while we were not subscribed
                delay = 0.1
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._heard(message["data"])
            except (RedisError, OSError, ValueError) as exc:  # ValueError: a connection closed under it
                if self._stop.is_set():
                    return
                log.warning("brain change subscription lost (%s); retrying in %.1f s", exc, delay)
                self.tell(None)
                self._stop.wait(delay)
                delay = min(delay * 2, 5.0)
            finally:
                with contextlib.suppress(RedisError, OSError, ValueError):
                    pubsub.close()

    def _heard(self, data: bytes | str) -> None:
        text = data.decode() if isinstance(data, bytes) else str(data)
        origin, _, ids = text.partition(" ")
        if origin == self.origin:
            return
        try:
            self.tell([int(i) for i in ids.split(",") if i])
        except ValueError:
            log.warning("ignored a malformed brain change message: %r", text[:200])
