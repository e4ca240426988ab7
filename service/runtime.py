"""The backends a process works with, chosen by settings and built in one place (:func:`build_runtime`).

The API process builds its :class:`Runtime` when the app starts (``service.app``), a Celery worker
process on first use (``workers.tasks``; a forked process builds its own), and tools that only
read (the benchmarks) build one without a job executor. Each backend follows its own setting:

- the database: ``BRAIN_DATABASE_URL``, or a SQLite file in the data dir when it is unset;
- blobs (checkpoints, meta-training sets; ``BRAIN_BLOBS``): rows of the database (the default with
  Postgres: no disk shared between processes) or files in the data dir (``service.blobs``);
- with ``BRAIN_REDIS_URL``, replay buffers, writer locks, change announcements and job counts go
  through Redis; without it they stay on this machine (in-memory replay stores, file locks in the
  data dir);
- jobs (``BRAIN_JOBS``): Celery (``auto`` with Redis), a job process that this one starts and
  supervises (``child``, ``auto`` without Redis: ``service.job_child``), or threads of this process
  (``inprocess``). An embedded runtime that runs jobs claims the data dir first
  (``service.datadir``), so one process (with its job process) alone runs an embedded brain's jobs.

What runs a job is handed in by the caller (a :class:`~service.jobs.JobRunner`: ``service.app``,
``service.job_process``), so this module depends on no orchestration.

The embedded default is SQLite with everything else on this machine; the full stack is Postgres,
Redis and Celery.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from service import datadir
from service.blobs import BlobStore, make_blob_store
from service.changes import BrainChanges
from service.datadir import DataDirClaim
from service.db import Database
from service.job_child import ChildJobs
from service.job_counts import JobCounts
from service.jobs import CeleryJobs, Executor, InProcessJobs, JobRunner, Jobs
from service.locks import FileLocks, Lease, Locks, RedisLocks
from service.replay import MemoryStores, RedisStore, ReplayBuffer, SnapshotStores
from service.settings import Settings
from service.tables import Brain
from service.training_cache import TrainingCache
from service.versions import VersionStore, input_dim

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    db: Database
    versions: VersionStore
    locks: Locks
    jobs: Jobs
    redis: object | None = None  # redis.Redis on the full stack
    job_counts: JobCounts = field(default_factory=JobCounts)  # what jobs did, for /metrics
    replay_stores: MemoryStores = field(default_factory=MemoryStores)  # in-process replay buffers (embedded)
    # embedded, when another process (the job process) holds the live buffers: what they held at
    # the last version, for reading
    replay_view: SnapshotStores | None = None
    changes: BrainChanges = field(default_factory=BrainChanges)
    training: TrainingCache = field(default_factory=TrainingCache)  # learners kept between jobs
    data_dir_claim: DataDirClaim | None = None  # held by the process that runs an embedded brain's jobs

    @property
    def blobs(self) -> BlobStore:
        return self.versions.blobs

    @property
    def device(self) -> str:
        if self.settings.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.settings.device

    @property
    def embedded_replay(self) -> bool:
        """In-process replay stores travel with every version; Redis ones with every sleep."""
        return self.redis is None

    def replay(self, brain: Brain, lease: Lease | None = None) -> ReplayBuffer:
        """The brain's replay buffer; a writer passes its ``lease``, so that what it writes to a
        Redis buffer is refused once the brain's writer lock is no longer its own."""
        width = input_dim(brain.input_shape, brain.encoder)
        if self.redis is not None:
            store = RedisStore(self.redis, brain.id, width, guard=lease.guard if lease is not None else None)
        elif self.replay_view is not None:
            store = self.replay_view.get(brain)
        else:
            store = self.replay_stores.get(brain.id, brain.created_at)
        return ReplayBuffer(store, capacity=int(brain.replay["size"]), policy=brain.replay["policy"],
                            seed=brain.seed, width=width)

    def latest_replay_snapshot(self, brain: Brain) -> dict | None:
        with self.db.session(read_only=True) as s:
            return self.versions.latest_replay_snapshot(s, brain)

    def drop_replay(self, brain_id: int) -> None:
        if self.redis is None:
            self.replay_stores.drop(brain_id)
            if self.replay_view is not None:
                self.replay_view.drop(brain_id)
        else:
            RedisStore(self.redis, brain_id, dim=0).clear()

    def close(self) -> None:
        self.changes.close()
        self.jobs.shutdown()
        self.db.dispose()
        if self.data_dir_claim is not None:
            self.data_dir_claim.release()


def build_runtime(settings: Settings, *, executor: bool = True, runner: JobRunner | None = None,
                  role: str = "api") -> Runtime:
    """``executor=False`` builds a runtime that cannot submit jobs (used by read-only tools);
    ``runner``: what runs jobs, needed by the embedded executors (``child``, ``inprocess``);
    ``role`` names the process in the job events it records ("api", "jobs" for the embedded job
    process, "worker" for Celery's). An embedded one that runs jobs owns the data dir
    (``service.datadir``): :class:`DataDirBusy` when another process does."""
    claim = None
    if executor and not settings.uses_celery:
        if runner is None:
            raise ValueError(f"embedded jobs ({settings.job_backend}) need a job runner")
        claim = datadir.claim(settings.data_dir)
    db = Database(settings)
    blobs = make_blob_store(settings.blob_backend, root=settings.checkpoint_dir, db=db)
    versions = VersionStore(blobs, keep=settings.keep_versions)
    redis_client = None
    if settings.redis_url:
        import redis

        redis_client = redis.Redis.from_url(settings.redis_url, socket_timeout=10, health_check_interval=30)
    locks: Locks = (
        RedisLocks(redis_client, settings.lock_timeout_seconds)
        if redis_client is not None
        else FileLocks(settings.data_dir / "locks", settings.lock_timeout_seconds)
    )
    jobs = Jobs(db, stale_after=settings.lock_timeout_seconds, role=role)
    # commit hooks run in the order attached: a job's end is counted before it is announced, so
    # whoever the announcement wakes (a ?wait=true request) finds it counted in /metrics
    job_counts = JobCounts(redis_client)  # counted as jobs change, in every process
    job_counts.attach(db.sessions)
    changes = BrainChanges(redis_client)
    changes.attach(db.sessions)
    rt = Runtime(settings=settings, db=db, versions=versions, locks=locks, jobs=jobs, redis=redis_client,
                 changes=changes, job_counts=job_counts, data_dir_claim=claim)
    if executor:
        jobs.executor = _executor(rt, runner, claim)
    return rt


def _executor(rt: Runtime, runner: JobRunner | None, claim: DataDirClaim | None) -> Executor:
    settings = rt.settings
    if settings.job_backend == "celery":
        assert settings.broker_url, "Celery jobs need BRAIN_BROKER_URL or BRAIN_REDIS_URL"
        return CeleryJobs(settings.broker_url, backend_url=settings.redis_url)
    if settings.job_backend == "inprocess":
        return InProcessJobs(lambda job_id: runner.run(rt, job_id), nice=settings.job_nice,
                             retryable=runner.retryable)
    rt.replay_view = SnapshotStores(load=rt.latest_replay_snapshot)
    return ChildJobs(settings, changed=rt.changes.tell, counted=rt.job_counts.add,
                     recover=lambda keep: runner.recover(rt, keep), claim_fd=claim.fd if claim else None)
