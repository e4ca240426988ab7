"""The client's own models of the service's answers (HTTP API v1), so that the client installs and
runs without the server's code.

Each class is named after the service's response schema it reads (``/openapi.json``'s
``components.schemas``) and declares the fields the client and its users read, with types that
accept every value the service may send; tests/client/test_wire.py checks them against the
service's OpenAPI document so that they cannot drift. Fields the service adds later are kept, not
refused (``extra="allow"``): an older client still reads a newer service.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict


class _Answer(BaseModel):
    model_config = ConfigDict(extra="allow")


# -- brains ---------------------------------------------------------------------------------------
class InputOut(_Answer):
    kind: str
    shape: list[int]


class SleepPolicy(_Answer):
    every_samples: int | None = None
    every_seconds: float | None = None
    budget: int | None = None


class ReplaySpec(_Answer):
    size: int
    policy: str


class BrainOut(_Answer):
    name: str
    input: InputOut
    strategy: str
    encoder: str
    params: dict[str, Any]
    sleep_policy: SleepPolicy
    replay: ReplaySpec
    seed: int
    max_labels: int
    labels: list[str | int]
    current_version: int | None
    samples_learned: int
    samples_pending: int
    created_at: datetime


class BrainList(_Answer):
    brains: list[BrainOut]


class TaskOut(_Answer):
    name: str
    ordinal: int
    labels: list[str | int]
    samples: int
    created_at: datetime


class TaskList(_Answer):
    tasks: list[TaskOut]


class VersionOut(_Answer):
    number: int
    kind: str
    current: bool
    promoted: bool
    log_position: int
    samples_learned: int
    tasks_seen: int
    stats: dict[str, Any]
    created_at: datetime


class VersionList(_Answer):
    current: int | None
    versions: list[VersionOut]


class HistoryRow(_Answer):
    version: int
    tasks_seen: int
    accuracy: dict[str, float]


class PrequentialPoint(_Answer):
    version: int | None = None
    at: datetime | None = None
    labelled: int
    accuracy: float


class PrequentialOut(_Answer):
    labelled: int
    accuracy: float | None
    per_version: list[PrequentialPoint]
    over_time: list[PrequentialPoint]


class MetricsOut(_Answer):
    mode: str
    tasks: list[str]
    versions: list[int]
    accuracy_matrix: list[list[float | None]]
    average_accuracy: float | None
    backward_transfer: float | None
    forward_transfer: float | None
    forgetting: float | None
    history: list[HistoryRow]
    prequential: PrequentialOut | None = None


# -- learning and predicting ----------------------------------------------------------------------
class SamplesAccepted(_Answer):
    accepted: int
    duplicates: int
    job: str | None = None
    version: int | None = None
    state: str | None = None


class Prediction(_Answer):
    id: str
    label: str | int
    confidence: float


class PredictOut(_Answer):
    version: int
    predictions: list[Prediction]


class FeedbackAccepted(_Answer):
    accepted: int
    duplicates: int
    job: str | None = None


class EvaluateOut(_Answer):
    version: int
    task: str
    mode: str
    accuracy: float
    samples: int


# -- jobs -----------------------------------------------------------------------------------------
class JobAccepted(_Answer):
    job: str
    state: str
    result: dict[str, Any] | None = None
    error: str | None = None


class JobOut(_Answer):
    id: str
    brain: str | None
    kind: str
    state: str
    progress: float
    phase: str | None
    result: dict[str, Any] | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int = 0
    events: list[dict[str, Any]] = []


# -- API keys -------------------------------------------------------------------------------------
class KeyOut(_Answer):
    id: int
    name: str
    prefix: str
    admin: bool
    brains: dict[str, str]
    created_at: datetime
    revoked_at: datetime | None


class KeyCreated(KeyOut):
    key: str


class KeyList(_Answer):
    keys: list[KeyOut]
