"""The relational schema (SQLAlchemy 2.0 declarative). Alembic migrations are the only way it changes.

- ``brains``: the registry of brains, their label table and learning cursor.
- ``tasks``: tasks as they arrive, with their labels.
- ``samples``: the durable sample log. A POST is acknowledged only after its samples are here; a
  version records how far into the log it has learned (``log_position``), so a lost job is re-done
  from the log and nothing acknowledged is lost or learned twice.
- ``versions``: immutable numbered checkpoints of a brain (their bytes are blobs: ``service.versions``).
- ``jobs``: wake and sleep jobs, their state and progress.
- ``evaluations``: accuracy per task per version, the source of the accuracy matrix.
- ``blobs``: bytes by key, cut into chunks: checkpoints and meta-training sets when the blob store
  is the database (``service.blobs``, the full stack's default), so no process needs a shared disk.
- ``api_keys`` and ``api_key_grants``: API keys (only their sha256 is stored) and the brains each
  may read or change (``service.auth``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments INTEGER PRIMARY KEY; Postgres gets a BIGINT.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator):
    """A timezone-aware UTC timestamp on every database (SQLite stores no zone: UTC is added back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Brain(Base):
    __tablename__ = "brains"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    input_kind: Mapped[str] = mapped_column(String(16))
    input_shape: Mapped[list[Any]]
    strategy: Mapped[str] = mapped_column(String(32))
    encoder: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any]]
    sleep_policy: Mapped[dict[str, Any]]
    replay: Mapped[dict[str, Any]]  # {"size": int, "policy": "reservoir" | "class_balanced"}
    seed: Mapped[int] = mapped_column(Integer, default=0)
    # the most labels the brain holds (the API's max_labels, the learner's output size); the
    # column keeps the name it was created with
    max_labels: Mapped[int] = mapped_column("num_classes", Integer)
    # label table: index -> label as the client gave it (string or integer)
    labels: Mapped[list[Any]] = mapped_column(JSON, default=list)
    current_version: Mapped[int | None] = mapped_column(Integer)
    # highest sample-log id learned by any version (monotonic; promote does not move it)
    learned_position: Mapped[int] = mapped_column(BigInteger, default=0)
    samples_learned: Mapped[int] = mapped_column(BigInteger, default=0)
    samples_since_sleep: Mapped[int] = mapped_column(BigInteger, default=0)
    # fencing token of the brain's writer: incremented by each holder of the writer lock as it
    # takes it; a write checks it is still its own (service.writer)
    writer_fence: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    last_sleep_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (UniqueConstraint("brain_id", "name"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    brain_id: Mapped[int] = mapped_column(ForeignKey("brains.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    ordinal: Mapped[int] = mapped_column(Integer)
    labels: Mapped[list[Any]] = mapped_column(JSON, default=list)  # label indices
    samples: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Sample(Base):
    __tablename__ = "samples"
    __table_args__ = (UniqueConstraint("brain_id", "sample_key"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    brain_id: Mapped[int] = mapped_column(ForeignKey("brains.id", ondelete="CASCADE"), index=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    sample_key: Mapped[str | None] = mapped_column(String(128))
    label: Mapped[int] = mapped_column(Integer)
    x: Mapped[bytes] = mapped_column(LargeBinary)  # little-endian float32, never pickled
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Version(Base):
    __tablename__ = "versions"
    __table_args__ = (UniqueConstraint("brain_id", "number"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    brain_id: Mapped[int] = mapped_column(ForeignKey("brains.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))  # init | wake | sleep
    log_position: Mapped[int] = mapped_column(BigInteger)
    samples_learned: Mapped[int] = mapped_column(BigInteger)
    tasks_seen: Mapped[int] = mapped_column(Integer)
    stats: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    promoted: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    brain_id: Mapped[int] = mapped_column(ForeignKey("brains.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # wake | sleep
    state: Mapped[str] = mapped_column(String(16), default="queued")
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    phase: Mapped[str | None] = mapped_column(String(128))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # what happened to it, in order: {"at", "event", "by" (role@host:pid), ...} (service.jobs.Jobs.event)
    events: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, default=list)  # None: made before 0003
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # renewed while the job runs (with its writer lock); a running job whose heartbeat is older than
    # the lock timeout has lost its runner and may be started again (service.jobs.Jobs.start)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Evaluation(Base):
    __tablename__ = "evaluations"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    brain_id: Mapped[int] = mapped_column(ForeignKey("brains.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    task: Mapped[str] = mapped_column(String(128))
    mode: Mapped[str] = mapped_column(String(8))  # class | task
    accuracy: Mapped[float] = mapped_column(Float)
    samples: Mapped[int] = mapped_column(Integer)
    tasks_seen: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Feedback(Base):
    """A served prediction later labelled (``POST .../feedback``): was the version that answered
    right? The rows behind the prequential accuracy; the labelled input itself went to the log."""

    __tablename__ = "feedback"
    __table_args__ = (UniqueConstraint("brain_id", "prediction"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    brain_id: Mapped[int] = mapped_column(ForeignKey("brains.id", ondelete="CASCADE"), index=True)
    prediction: Mapped[str] = mapped_column(String(64))  # the prediction's id
    version: Mapped[int] = mapped_column(Integer)  # the version that answered
    correct: Mapped[bool] = mapped_column()
    confidence: Mapped[float] = mapped_column(Float)
    served_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DriftRecord(Base):
    """A drift event of one brain's served predictions (``service.drift_watch``): when, on which
    signal, by which detector, and the estimates of the change."""

    __tablename__ = "drift_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    brain_id: Mapped[int] = mapped_column(ForeignKey("brains.id", ondelete="CASCADE"), index=True)
    signal: Mapped[str] = mapped_column(String(16))  # error | confidence | input
    detector: Mapped[str] = mapped_column(String(32))
    version: Mapped[int] = mapped_column(Integer)  # the version serving when it fired
    statistic: Mapped[dict] = mapped_column(JSON)  # index, change_at, before, after
    slept: Mapped[str | None] = mapped_column(String(36))  # the sleep job it started (sleep_policy.on_drift)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiKey(Base):
    """An API key; the key itself is shown once at creation and never stored (``key_hash``: sha256)."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    prefix: Mapped[str] = mapped_column(String(16))  # the key's first characters, for display
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    admin: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ApiKeyGrant(Base):
    """What a non-admin key may do with one brain: "read" or "write" (read and change)."""

    __tablename__ = "api_key_grants"
    __table_args__ = (UniqueConstraint("key_id", "brain_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), index=True)
    brain_id: Mapped[int] = mapped_column(ForeignKey("brains.id", ondelete="CASCADE"), index=True)
    access: Mapped[str] = mapped_column(String(8))  # read | write


class Blob(Base):
    """One chunk of a blob (``service.blobs.DatabaseBlobs``): a key's bytes are its chunks' ``data``
    in ``chunk`` order."""

    __tablename__ = "blobs"

    key: Mapped[str] = mapped_column(String(512), primary_key=True)
    chunk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    data: Mapped[bytes] = mapped_column(LargeBinary)
