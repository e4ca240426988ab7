"""The episodic replay buffer of a brain: a selection policy (models.replay) over a storage backend.

Storage backends hold fixed-capacity slots of ``(x, label)`` plus the count of samples offered:
- :class:`MemoryStore`: in-process (the embedded default); a snapshot travels with every version,
  and the embedded API reads its job process's buffers from those (:class:`SnapshotStores`).
- :class:`RedisStore`: Redis hashes (full stack); a snapshot is taken at every sleep, so a lost Redis
  is restored from the last one.

Vectors are stored as little-endian float32 bytes; nothing is pickled. Writers hold the brain's lock.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import torch

from models.learner import Replay
from models.replay import POLICIES
from service.locks import LockLost


class ReplayStore(Protocol):
    def seen(self) -> int: ...
    def labels(self) -> list[int]: ...
    def write(self, slots: list[int], x: np.ndarray, labels: list[int], seen: int, *, clear: bool = False) -> None:
        """Slots, their inputs and labels, and the count offered, at once (after emptying the store
        when ``clear``)."""
    def read(self, slots: list[int]) -> tuple[np.ndarray, list[int]]: ...
    def clear(self) -> None: ...


class MemoryStore:
    """Slots in a Python dict; one per brain, shared by every thread of the process."""

    def __init__(self) -> None:
        self._x: dict[int, np.ndarray] = {}
        self._y: dict[int, int] = {}
        self._seen = 0

    def seen(self) -> int:
        return self._seen

    def labels(self) -> list[int]:
        return [self._y[i] for i in range(len(self._y))]

    def write(self, slots: list[int], x: np.ndarray, labels: list[int], seen: int, *, clear: bool = False) -> None:
        if clear:
            self.clear()
        for slot, row, label in zip(slots, x, labels):
            self._x[slot] = np.array(row, dtype=np.float32)
            self._y[slot] = int(label)
        self._seen = seen

    def read(self, slots: list[int]) -> tuple[np.ndarray, list[int]]:
        return np.stack([self._x[s] for s in slots]), [self._y[s] for s in slots]

    def clear(self) -> None:
        self._x.clear()
        self._y.clear()
        self._seen = 0


# One write of a Redis store, atomic: refused (0) unless the writer's lock still holds this
# writer's token (KEYS[4], ARGV[1]; no check when ARGV[1] is empty); emptied first when ARGV[2]
# is "1"; then the count offered (ARGV[3]) and (slot, input, label) triples.
_WRITE = """
if ARGV[1] ~= '' and redis.call('get', KEYS[4]) ~= ARGV[1] then return 0 end
if ARGV[2] == '1' then redis.call('del', KEYS[1], KEYS[2]) end
for i = 4, #ARGV, 3 do
  redis.call('hset', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('hset', KEYS[2], ARGV[i], ARGV[i + 2])
end
redis.call('set', KEYS[3], ARGV[3])
return 1
"""


class RedisStore:
    """Slots in two Redis hashes (``x``: slot -> float32 bytes, ``y``: slot -> label) and a counter.

    ``guard``: the writer lock's key and the writer's token (``Lease.guard``). Each write is then
    refused with :class:`~service.locks.LockLost`, changing nothing, once the lock is no longer the
    writer's: a writer cut off by a partition, whose brain another took over, writes nothing when
    it comes back (its version's publish is fenced the same way in Postgres)."""

    def __init__(self, client, brain_id: int, dim: int, *, guard: tuple[str, bytes] | None = None) -> None:
        self.r = client
        self.dim = dim
        self.brain_id = brain_id
        self.guard = guard
        prefix = f"pb:replay:{brain_id}"
        self.kx, self.ky, self.kseen = f"{prefix}:x", f"{prefix}:y", f"{prefix}:seen"

    def seen(self) -> int:
        return int(self.r.get(self.kseen) or 0)

    def labels(self) -> list[int]:
        raw = self.r.hgetall(self.ky)
        return [int(raw[str(i).encode()]) for i in range(len(raw))]

    def write(self, slots: list[int], x: np.ndarray, labels: list[int], seen: int, *, clear: bool = False) -> None:
        x = np.asarray(x, dtype="<f4")
        key, token = self.guard or ("", b"")
        args: list = [token, "1" if clear else "0", seen]
        for i, (slot, label) in enumerate(zip(slots, labels)):
            args += [slot, x[i].tobytes(), int(label)]
        if not self.r.eval(_WRITE, 4, self.kx, self.ky, self.kseen, key or self.kseen, *args):
            raise LockLost(f"brain {self.brain_id}: the writer lock is no longer this writer's: "
                           "its replay buffer write is refused")

    def read(self, slots: list[int]) -> tuple[np.ndarray, list[int]]:
        keys = [str(s) for s in slots]
        xs = self.r.hmget(self.kx, keys)
        ys = self.r.hmget(self.ky, keys)
        x = np.stack([np.frombuffer(b, dtype="<f4", count=self.dim) for b in xs]).astype(np.float32)
        return x, [int(y) for y in ys]

    def clear(self) -> None:
        self.r.delete(self.kx, self.ky, self.kseen)


class ReplayBuffer:
    """``add`` / ``sample`` / ``len`` / ``snapshot`` / ``restore`` over any store."""

    def __init__(self, store: ReplayStore, *, capacity: int, policy: str, seed: int, width: int = 0) -> None:
        self.store = store
        self.width = width  # of the brain's encoded inputs: an empty sample still has it
        self.capacity = capacity
        self.policy = POLICIES[policy]()
        self.seed = seed

    def __len__(self) -> int:
        return len(self.store.labels())

    def add(self, x: np.ndarray, y: list[int]) -> None:
        self.add_many([x], [y])

    def add_many(self, xs: Sequence[np.ndarray], ys: Sequence[Sequence[int]]) -> None:
        """What ``add`` called on each ``(xs[i], ys[i])`` in turn leaves, in one read and one write
        of the store (one worker's wake offers a chunk of the log so)."""
        self.add_batches([[int(v) for v in y] for y in ys], lambda keys: np.stack([xs[b][i] for b, i in keys]))

    def add_batches(self, batches: list[list[int]], fetch: Callable[[list[tuple[int, int]]], np.ndarray]) -> None:
        """What ``add`` called on each batch in turn leaves (``batches``: their labels), reading
        only the inputs that end up stored: ``fetch(keys)`` returns the rows ``x`` of the samples
        ``(batch, row)`` in ``keys``. A sharded wake's merge offers its samples so."""
        writes, seen = self.choose(batches)
        slots = sorted(writes)
        keys = [writes[s] for s in slots]
        x = fetch(keys) if keys else np.zeros((0, self.width), dtype=np.float32)
        self.store.write(slots, x, [int(batches[b][i]) for b, i in keys], seen)

    def choose(self, batches: list[list[int]]) -> tuple[dict[int, tuple[int, int]], int]:
        """Where the samples of ``batches`` (the labels of consecutive ``add`` calls) go: ``{slot:
        (batch, row)}`` of those still stored after the last, and the count offered by then. Each
        call draws from its own generator, seeded by the count offered before it (deterministic,
        nothing to persist). Reads the store; writes nothing."""
        seen = self.store.seen()
        slot_labels = self.store.labels()
        writes: dict[int, tuple[int, int]] = {}  # slot -> sample (a later sample may take the same slot)
        for b, labels in enumerate(batches):
            rng = random.Random(f"{self.seed}:{seen}")
            for i, label in enumerate(labels):
                slot = self.policy.slot_for(
                    label=int(label), seen=seen, capacity=self.capacity, slot_labels=slot_labels, rng=rng
                )
                seen += 1
                if slot is None:
                    continue
                if slot == len(slot_labels):
                    slot_labels.append(int(label))
                else:
                    slot_labels[slot] = int(label)
                writes[slot] = (b, i)
        return writes, seen

    def sample(self, n: int | None = None, *, seed: int = 0) -> Replay:
        """Up to ``n`` distinct samples (all when ``n`` is None), in a seeded random order."""
        size = len(self)
        if size == 0:
            return Replay(torch.zeros(0, self.width), torch.zeros(0, dtype=torch.long))
        order = list(range(size))
        random.Random(f"{self.seed}:{seed}:sample").shuffle(order)
        slots = order if n is None else order[: max(0, n)]
        x, y = self.store.read(slots)
        return Replay(torch.from_numpy(x), torch.tensor(y, dtype=torch.long))

    def snapshot(self) -> dict[str, torch.Tensor]:
        size = len(self)
        if size:
            x, y = self.store.read(list(range(size)))
        else:
            x, y = np.zeros((0, self.width), dtype=np.float32), []
        return {
            "x": torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
            "y": torch.tensor(y, dtype=torch.long),
            "seen": torch.tensor(self.store.seen(), dtype=torch.long),
        }

    def restore(self, snap: dict[str, torch.Tensor]) -> None:
        restore(self.store, snap)

    def purge(self, forgotten: set[tuple[bytes, int]], offered: int) -> int:
        """Remove every slot whose input (as little-endian float32 bytes) and label are in
        ``forgotten`` (exact unlearning; a slot holds no sample id, so identical copies go too):
        the others keep their order in slots ``0..n-1``, and the count offered drops by
        ``offered`` (the forgotten samples that were offered to the buffer), never below what it
        holds, so that the free slots fill first. The number of slots removed."""
        size = len(self)
        if size == 0 and offered == 0:
            return 0
        snap = self.snapshot()
        x = snap["x"].numpy().astype("<f4", copy=False)
        y = [int(v) for v in snap["y"].tolist()]
        keep = [i for i in range(size) if (x[i].tobytes(), y[i]) not in forgotten]
        seen = max(len(keep), int(snap["seen"]) - offered)
        if len(keep) < size or seen != int(snap["seen"]):
            restore(self.store, {"x": snap["x"][keep], "y": torch.tensor([y[i] for i in keep], dtype=torch.long),
                                 "seen": torch.tensor(seen, dtype=torch.long)})
        return size - len(keep)


def holds_any(snap: dict[str, torch.Tensor], forgotten: set[tuple[bytes, int]]) -> bool:
    """Whether a replay snapshot holds any of the ``forgotten`` (input bytes, label) pairs."""
    x = snap["x"].numpy().astype("<f4", copy=False)
    return any((x[i].tobytes(), int(label)) in forgotten for i, label in enumerate(snap["y"].tolist()))


def restore(store: ReplayStore, snap: dict[str, torch.Tensor]) -> None:
    """Make ``store`` hold exactly the snapshot ``snap`` (``ReplayBuffer.snapshot``), at once."""
    y = [int(v) for v in snap["y"].tolist()]
    store.write(list(range(len(y))), snap["x"].numpy(), y, int(snap["seen"]), clear=True)


class MemoryStores:
    """The in-process stores of every brain, keyed by brain id and creation time: SQLite reuses the
    id of a deleted brain, and the process that deleted it may not be the one that holds its store
    (the embedded job process), so a new brain never finds an old one's samples."""

    def __init__(self) -> None:
        self._stores: dict[int, tuple[object, MemoryStore]] = {}
        self._lock = threading.Lock()

    def get(self, brain_id: int, created: object = None) -> MemoryStore:
        with self._lock:
            entry = self._stores.get(brain_id)
            if entry is None or entry[0] != created:
                entry = self._stores[brain_id] = (created, MemoryStore())
            return entry[1]

    def drop(self, brain_id: int) -> None:
        with self._lock:
            self._stores.pop(brain_id, None)


class SnapshotStores:
    """The stores of another process as this one can see them: the embedded API reads the buffers
    that its job process holds (``service.job_child``) from each brain's newest replay snapshot,
    which travels with every version, read again when the brain's current version changes. For
    reading only: the jobs, which write, run where the live stores are."""

    def __init__(self, load: Callable[[Any], dict[str, torch.Tensor] | None]) -> None:
        self.load = load  # brain -> its newest replay snapshot
        self._stores: dict[int, tuple[tuple, MemoryStore]] = {}
        self._lock = threading.Lock()

    def get(self, brain: Any) -> MemoryStore:
        key = (brain.created_at, brain.current_version)
        with self._lock:
            entry = self._stores.get(brain.id)
        if entry is not None and entry[0] == key:
            return entry[1]
        store = MemoryStore()
        snap = self.load(brain)
        if snap is not None:
            restore(store, snap)
        with self._lock:
            self._stores[brain.id] = (key, store)
        return store

    def drop(self, brain_id: int) -> None:
        with self._lock:
            self._stores.pop(brain_id, None)
