"""Request and response bodies of the HTTP API (v1)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
TaskName = Annotated[str, StringConstraints(min_length=1, max_length=128)]
# integer labels fit in 64 bits: the JSON encoder of predictions (orjson) refuses larger ones
Label = Annotated[str, StringConstraints(min_length=1, max_length=256)] | Annotated[
    int, Field(ge=-(2**63), le=2**63 - 1)
]
JobState = Literal["queued", "running", "succeeded", "failed"]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # NaN / Infinity: 422, never stored


# -- brains ---------------------------------------------------------------------------------------
class InputSpec(_In):
    kind: Literal["vector", "image", "text"]
    shape: list[Annotated[int, Field(ge=1)]] | None = Field(
        None, max_length=4, description="vector: [n] or any shape; image: [H, W] or [C, H, W]; text: [1], "
        "which may be left out")

    @model_validator(mode="after")
    def _shape(self) -> InputSpec:
        if not self.shape:
            if self.kind != "text":
                example = "[784]" if self.kind == "vector" else "[28, 28]"
                raise ValueError(f"a{'n' if self.kind == 'image' else ''} {self.kind} brain needs a shape, "
                                 f"e.g. {example}")
            self.shape = [1]  # one string a sample
        return self


class SleepPolicy(_In):
    every_samples: int | None = Field(None, ge=1, description="Sleep after this many new samples.")
    every_seconds: float | None = Field(  # at most 100 years: a timedelta of more overflowed in the wake job
        None, ge=1, le=100 * 365 * 86400, description="Sleep at most this often when new samples came.",
    )
    budget: int | None = Field(
        None, ge=1, le=10_000_000,
        description="Samples one sleep rehearses. Default: as many as were learned since the last "
        "sleep, at least 1,000 and at most 10,000.",
    )
    on_drift: bool = Field(False, description="Sleep when a drift event fires (GET .../drift).")


class ReplaySpec(_In):
    size: int = Field(500, ge=0, le=1_000_000, description="Samples kept in the episodic replay buffer.")
    policy: Literal["reservoir", "class_balanced"] = "reservoir"


class BrainCreate(_In):
    name: Name
    input: InputSpec
    strategy: str | None = Field(None, description="A registered strategy; default: the best measured.")
    encoder: str | None = Field(None, description="Input encoder; vector brains use 'flatten'.")
    params: dict[str, Any] = Field(default_factory=dict, description="The strategy's hyperparameters.")
    max_labels: int | None = Field(
        None, ge=2, description="Most distinct labels the brain will learn: its classifier's outputs. "
        "Default and upper bound: the service's BRAIN_MAX_LABELS.",
    )
    sleep_policy: SleepPolicy = Field(default_factory=SleepPolicy)
    replay: ReplaySpec = Field(default_factory=ReplaySpec)
    seed: int = Field(0, ge=0, le=2**31 - 1)


class BrainUpdate(_In):
    params: dict[str, Any] | None = Field(
        None, description="Hyperparameters to change (top-level keys replace the current values), "
        "e.g. plastic's layers or mode. Only strategies that can carry their state over accept it.",
    )
    sleep_policy: SleepPolicy | None = Field(None, description="Replaces the sleep policy.")


class InputOut(BaseModel):
    kind: Literal["vector", "image", "text"]
    shape: list[int]


class BrainOut(BaseModel):
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


class BrainList(BaseModel):
    brains: list[BrainOut]


# -- samples and predictions ----------------------------------------------------------------------
class InputIn(_In):
    """One input, in the form the brain's kind takes."""

    x: list[Any] | None = Field(None, description="Numbers, flat or nested to the brain's shape.")
    x_b64: str | None = Field(
        None, description="The same numbers, compactly: base64 of little-endian float32, row-major.",
    )
    image: str | None = Field(None, description="Base64 PNG/JPEG (image brains).")
    text: str | None = Field(None, description="Text (text brains).")

    @model_validator(mode="after")
    def _one_input(self) -> InputIn:
        _exactly_one_input(self)
        return self


class SampleIn(InputIn):
    label: Label
    id: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = Field(
        None, description="Idempotency key: a sample id seen before is not learned twice."
    )


def _exactly_one_input(obj: BaseModel) -> None:
    given = [k for k in INPUT_FIELDS if getattr(obj, k) is not None]
    if len(given) != 1:
        raise ValueError("give exactly one of 'x', 'x_b64', 'image' or 'text'")


INPUT_FIELDS = ("x", "x_b64", "image", "text")


def _non_empty(message: str) -> AfterValidator:
    def check(v: list) -> list:
        if not v:
            raise ValueError(message)
        return v

    return AfterValidator(check)


class SamplesIn(_In):
    task: TaskName
    samples: Annotated[list[SampleIn], _non_empty("the batch is empty: send at least one sample")] = Field(
        ..., description="Labelled samples; at least one."
    )


class SamplesAccepted(BaseModel):
    accepted: int
    duplicates: int
    job: str | None = Field(None, description="The wake job that learns them (None when all were duplicates).")
    version: int | None = Field(None, description="With wait=true: the version that includes them.")
    state: JobState | None = None


class MetaTrainIn(_In):
    """A background set for meta-training (strategies that can, e.g. "anml"). Its labels are the
    set's own: they never enter the brain's labels, tasks or sample log."""

    samples: Annotated[list[SampleIn], _non_empty("no background samples: send at least two classes")] = Field(
        ..., description="Labelled background samples of at least two distinct labels."
    )
    steps: int = Field(500, ge=1, le=20_000, description="Outer (meta) steps (ANML used 20000).")
    inner_steps: int = Field(10, ge=1, le=1_000, description="Inner SGD steps per outer step.")
    first_order: bool | None = Field(
        None, description="First-order meta-gradient; None: the strategy's own setting."
    )


class PredictIn(_In):
    inputs: Annotated[list[InputIn], _non_empty("no inputs: send at least one")]
    task: TaskName | None = Field(None, description="Restrict the answer to this task's labels.")


class Prediction(BaseModel):
    id: str = Field(description="This prediction's id: send it with the true label to POST .../feedback.")
    label: str | int
    confidence: float


class PredictOut(BaseModel):
    version: int
    predictions: list[Prediction]


class FeedbackItem(_In):
    prediction: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        description="A prediction's id, from a predict answer.")
    label: Label = Field(description="The true label of the input that prediction was for.")
    task: TaskName | None = Field(None, description="The sample's task (default: the batch's).")


class FeedbackIn(_In):
    feedback: Annotated[list[FeedbackItem], _non_empty("no feedback: send at least one item")]
    task: TaskName | None = Field(
        None, description="The task of the samples made from this feedback; default: the task the prediction "
        "was asked for, else \"feedback\".")


class FeedbackAccepted(BaseModel):
    accepted: int = Field(description="Labelled inputs appended to the sample log.")
    duplicates: int = Field(description="Feedback on predictions that had it already: not learned again.")
    job: str | None = Field(None, description="The wake job that learns them.")


class PrequentialPoint(BaseModel):
    version: int | None = Field(None, description="The version that answered (per-version points).")
    at: datetime | None = Field(None, description="Start of the time bucket the predictions were served in.")
    labelled: int
    accuracy: float


class PrequentialOut(BaseModel):
    labelled: int = Field(description="Served predictions later labelled by feedback.")
    accuracy: float | None = Field(description="The share of them that were right.")
    per_version: list[PrequentialPoint]
    bucket_seconds: int
    over_time: list[PrequentialPoint] = Field(description="Per bucket of serving time, the newest 100.")


class DriftEventOut(BaseModel):
    signal: Literal["error", "confidence", "input"] = Field(
        description="error: served predictions later labelled wrong; confidence: their top probability; "
        "input: an image's mean pixel.")
    detector: str
    version: int = Field(description="The version serving when it fired.")
    statistic: dict[str, Any] = Field(description="index: the signal's sample it fired on; change_at, before, "
                                      "after: where the change began and the mean on each side (estimates).")
    sleep_job: str | None = Field(None, description="The sleep it started (sleep_policy.on_drift).")
    created_at: datetime


class DriftOut(BaseModel):
    events: list[DriftEventOut] = Field(description="Newest first.")
    watched: dict[str, int] = Field(description="Samples of each signal this API process has fed its monitors.")


class EvaluateIn(_In):
    task: TaskName
    samples: Annotated[list[SampleIn], _non_empty("no samples to evaluate on")]
    mode: Literal["class", "task"] = Field(
        "class", description="class: all labels compete; task: restricted to the task's labels."
    )


class EvaluateOut(BaseModel):
    version: int
    task: str
    mode: str
    accuracy: float
    samples: int


class StrategyOut(BaseModel):
    name: str
    default: bool
    settings: list[Literal["class", "task", "domain"]]  # the continual-learning settings it handles
    meta_trainable: bool
    # whether its wake can be sharded over several workers (issue 17), and under which params
    mergeable: bool = False
    mergeable_when: str | None = None
    params: dict[str, Any]  # JSON schema of its params


class StrategyList(BaseModel):
    strategies: list[StrategyOut]


# -- jobs, tasks, versions, metrics ---------------------------------------------------------------
class JobAccepted(BaseModel):
    """A job submitted by a request (a sleep, a meta-training): its id, and with ``wait`` its end."""

    job: str
    state: JobState
    result: dict[str, Any] | None = None
    error: str | None = None


class JobOut(BaseModel):
    id: str
    brain: str | None
    kind: str
    state: JobState
    progress: float
    phase: str | None
    result: dict[str, Any] | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int = Field(0, description="Times a process started it (more than 1: redelivered or retried).")
    events: list[dict[str, Any]] = Field(
        default_factory=list, description="What happened to it, in order: {at, event, by (role@host:pid), ...}; "
        "events: queued, received (by a Celery worker; redelivered true after a worker was lost), started, "
        "retrying, succeeded, failed.",
    )


class TaskOut(BaseModel):
    name: str
    ordinal: int
    labels: list[str | int]
    samples: int
    created_at: datetime


class TaskList(BaseModel):
    tasks: list[TaskOut]


class VersionOut(BaseModel):
    number: int
    kind: str
    current: bool
    promoted: bool
    log_position: int
    samples_learned: int
    tasks_seen: int
    stats: dict[str, Any]
    created_at: datetime


class VersionList(BaseModel):
    current: int | None
    versions: list[VersionOut]


class HistoryRow(BaseModel):
    version: int
    tasks_seen: int
    accuracy: dict[str, float]


class MetricsOut(BaseModel):
    mode: str
    tasks: list[str]
    versions: list[int]
    accuracy_matrix: list[list[float | None]]
    average_accuracy: float | None
    backward_transfer: float | None
    forward_transfer: float | None
    forgetting: float | None
    history: list[HistoryRow]
    prequential: PrequentialOut | None = Field(
        None, description="Accuracy of served predictions later labelled (POST .../feedback).")


class JobList(BaseModel):
    jobs: list[JobOut] = Field(description="Newest first.")


class ReplayOut(BaseModel):
    size: int = Field(description="Samples held.")
    capacity: int
    policy: str
    seen: int = Field(description="Samples ever offered to the buffer.")
    per_label: dict[str, int] = Field(description="Samples held per label (labels as strings).")


# -- API keys (service.auth) ----------------------------------------------------------------------
Access = Literal["read", "write"]


class KeyCreate(_In):
    name: Annotated[str, StringConstraints(min_length=1, max_length=128)] = Field(
        ..., description="Who or what the key is for (shown in listings and errors)."
    )
    admin: bool = Field(False, description="May do everything: create and delete brains, manage keys.")
    brains: dict[Name, Access] = Field(
        default_factory=dict, description='Brain name -> "read" (GET, predict) or "write" (read, and '
        "everything that changes the brain).",
    )


class KeyOut(BaseModel):
    id: int
    name: str
    prefix: str = Field(description="The key's first characters, to tell keys apart; not a secret.")
    admin: bool
    brains: dict[str, Access]
    created_at: datetime
    revoked_at: datetime | None


class KeyCreated(KeyOut):
    key: str = Field(description="The key itself: shown this once, stored only as a hash.")


class KeyList(BaseModel):
    keys: list[KeyOut]
