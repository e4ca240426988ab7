"""Runtime settings, read from ``BRAIN_*`` environment variables (pydantic-settings).

Nothing here is a module-level global: ``Settings()`` is built by the app factory, the CLI and the
worker, and handed down.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BRAIN_", extra="ignore")

    data_dir: Path = Field(Path("var"), description="The SQLite file, locks and (with file blobs) checkpoints live here.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; unset means a SQLite file in the data dir (embedded)."
    )
    redis_url: str | None = Field(
        None, description="Set: Redis replay buffer and Celery jobs (full stack). Unset: embedded."
    )
    broker_url: str | None = Field(None, description="Celery broker; defaults to redis_url.")
    jobs: Literal["auto", "child", "inprocess", "celery"] = Field(
        "auto", description="Job backend: celery (brain worker processes); child (a job process that the "
        "API starts and supervises, so training never holds the API's interpreter); inprocess (threads of "
        "the API process); auto picks celery when redis_url is set, else child."
    )
    blobs: Literal["auto", "files", "database"] = Field(
        "auto", description="Where checkpoints and meta-training sets live (service.blobs): files (under "
        "<data dir>/brains: every process of a deployment must share that folder), database (rows of the "
        "blobs table: every process reaches them, no shared disk); auto picks database with a Postgres "
        "database_url, else files.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where workers train.")
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = Field(
        "text", description="Log lines as text, or one JSON object a line (with request ids and, for "
        "each request, method, path, status and milliseconds).",
    )

    # limits on what a client may send
    max_batch: int = Field(2048, ge=1, description="Samples per POST.")
    max_input_dim: int = Field(200_000, ge=1, description="Product of a brain's input shape.")
    max_labels: int = Field(100, ge=2, description="Distinct labels a brain can learn.")
    max_body_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="Request body size.")
    max_meta_samples: int = Field(20_000, ge=2, description="Background samples per meta-train request.")

    # limits: per request, checked before decoding (service.inputs.check_limits)
    max_predict_inputs: int = Field(2048, ge=1, description="Inputs per predict request.")
    max_text_chars: int = Field(
        10_000, ge=1, le=10_000, description="Characters of one text input (at most 10,000: the text "
        "encoders read only the first few hundred words).",
    )

    # resource budgets (issue 14): what a brain's params or one request may make the API process
    # allocate, checked before it is allocated (service.budgets, service.inputs.check_images)
    max_model_bytes: int = Field(
        2 * 1024**3, ge=2**20, description="Bytes one brain may need at its largest: its learner (weights, "
        "optimiser state, memories once full, what its tasks add, the temporaries of a batch) and its "
        "replay buffer. Checked when a brain is created, its params change, a task is added, and per meta-training.",
    )
    max_decoded_pixels: int = Field(
        64 * 2**20, ge=1, description="Pixel values (pixels times channels) the images of one request "
        "may decode to, and be resized to, in all; read from their headers before any is decompressed.",
    )
    max_sleep_budget: int = Field(
        1_000_000, ge=1, description="Samples one sleep may rehearse: the most a sleep policy's budget may ask.",
    )

    # versions and schedules
    keep_versions: int = Field(10, ge=2, description="Unpromoted versions kept per brain.")
    sleep_check_seconds: float = Field(5.0, gt=0, description="How often sleep policies are checked.")
    wait_timeout_seconds: float = Field(120.0, gt=0, description="Longest ?wait=true wait.")
    # waiting (issue 14)
    max_waiters: int = Field(
        256, ge=1, description="?wait=true requests of one API process that wait at once (they hold no "
        "thread); one more is answered 503 with Retry-After before it does anything.",
    )
    wait_recheck_seconds: float = Field(
        1.0, gt=0, description="How often waiting requests re-read their jobs without an announcement; "
        "an end is announced at once, this only bounds a lost announcement.",
    )
    lock_timeout_seconds: float = Field(
        600.0, gt=0, description="Expiry of a brain's writer lock unless its holder renews it (a heartbeat "
        "every third of it); also how long a job waits for the lock.",
    )
    # writers and jobs (issue 14)
    busy_wait_seconds: float = Field(
        2.0, ge=0, description="How long promote and PATCH wait for a brain's writer (a running job) "
        "before answering 503 with Retry-After.",
    )
    wake_max_samples: int = Field(
        20_000, ge=1, description="Samples one wake job learns at most; it publishes, and a follow-up "
        "job learns the rest, so no job's work grows with the backlog.",
    )
    # a sharded wake (issue 17)
    wake_shards: int = Field(
        1, ge=1, le=64, description="Shards a wake job's backlog is split into, learned at once by as many "
        "Celery worker processes and merged into one version: for brains whose strategy's wake is a sum of "
        "per-sample statistics (GET /v1/strategies: mergeable_when); set it to the workers' processes. 1: "
        "off. Full stack only: the embedded default has one job process and never shards.",
    )
    wake_shard_min_samples: int = Field(
        2_000, ge=1, description="Samples a shard learns at least: a wake shards only with twice as many "
        "to learn, into fewer shards than wake_shards when it has less than that many times this.",
    )
    max_tasks: int = Field(1_000, ge=1, description="Tasks one brain holds at most.")
    job_nice: int = Field(
        10, ge=0, le=19, description="How much lower the CPU priority of training is than serving's (a "
        "nice increment): in-process job threads and Celery worker processes. 0 keeps it equal.",
    )

    # serving
    feedback_window_seconds: float = Field(
        3600.0, gt=0, description="How long the inputs of served predictions are kept for feedback "
        "(POST .../feedback); later feedback is answered 410.",
    )
    drift_check_seconds: float = Field(
        0.5, gt=0, description="How often the drift monitors are fed what was served and labelled since.",
    )
    feedback_max_kept: int = Field(
        20_000, ge=0, description="Most served predictions kept for feedback per API process (the "
        "oldest go first: 410); 0 keeps none.",
    )
    serving_ttl_seconds: float = Field(
        30.0, gt=0, description="Longest a prediction trusts its in-memory copy of a brain without "
        "re-reading it; changes are announced at once, this only bounds a lost announcement.",
    )
    torch_threads: int = Field(
        1, ge=0, description="torch threads of the API process (0: torch's default, one per core). One "
        "per process measured best: more contend with the event loop, the jobs and the other workers.",
    )

    # auth
    admin_key: SecretStr | None = Field(
        None, description="The admin API key (Authorization: Bearer ...): manages brains and keys. Auth is "
        "on when this is set or any key exists in the database; off (an open API) only when neither.",
    )
    require_auth: bool = Field(False, description="Refuse to start the API without an admin key.")
    auth_cache_seconds: float = Field(
        5.0, ge=0, description="How long a process trusts its memory of a key; a key revoked in another "
        "process stops working here within this time (at once in the process that revoked it).",
    )

    # auth and metrics (issue 14)
    metrics_public_brains: bool = Field(
        False, description="Show /metrics' per-brain series (brain names and figures) to anyone. Off: only "
        "to keys that may read the brain (every brain to admin keys); process-wide series are always open.",
    )
    metrics_cache_seconds: float = Field(
        5.0, ge=0, description="How long /metrics reuses its per-brain figures before reading them again.",
    )

    @model_validator(mode="after")
    def _defaults(self) -> Settings:
        self.data_dir = self.data_dir.expanduser().resolve()
        if self.database_url is None:
            self.database_url = f"sqlite:///{self.data_dir / 'brain.db'}"
        if self.broker_url is None:
            self.broker_url = self.redis_url
        return self

    @property
    def job_backend(self) -> Literal["child", "inprocess", "celery"]:
        if self.jobs == "auto":
            return "celery" if self.redis_url is not None else "child"
        return self.jobs

    @property
    def uses_celery(self) -> bool:
        return self.job_backend == "celery"

    @property
    def blob_backend(self) -> Literal["files", "database"]:
        if self.blobs == "auto":
            return "database" if self.database_url.startswith("postgresql") else "files"
        return self.blobs

    @property
    def checkpoint_dir(self) -> Path:
        return self.data_dir / "brains"
