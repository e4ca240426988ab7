"""What the service tells the people who run it, beyond its answers.

- :class:`BrainCollector`: Prometheus figures per brain, read from the service's own records when
  ``/metrics`` is scraped (samples learned and pending, current version, versions kept, replay
  buffer size, jobs by kind and state, sleep seconds, served predictions later labelled right or
  wrong, drift events). Read at scrape time, they are the same whichever process did the work: the
  API itself (embedded) or a Celery worker (full stack). They name brains, so only a scraper that may
  read a brain sees its series (:func:`scraped_by`), and a scrape's cost does not grow with the
  history.
- Request ids: ``_Observe`` (``service.app``) takes a request's ``X-Request-ID`` or makes one, puts
  it in :data:`REQUEST_ID` for the request's logs and answers with it; jobs log under
  ``job:<id>``.
- :func:`configure_logging`: text lines, or one JSON object a line (``BRAIN_LOG_FORMAT=json``,
  python-json-logger) carrying ``request_id``.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from service import samplelog
from service.auth import Principal
from service.job_counts import SLEEP_SECONDS, SLEEPS, Counts, job_states
from service.runtime import Runtime
from service.tables import Brain, DriftRecord, Feedback, Version

log = logging.getLogger(__name__)

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
#: who the running scrape is for: None for an anonymous one (see :func:`scraped_by`)
SCRAPER: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("scraper", default=None)
#: a brain's unlearned samples are counted up to this many: the count is an index range, not a scan
PENDING_COUNT_LIMIT = 100_000
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get() or "-"
        return True


def configure_logging(level: str, fmt: str = "text") -> None:
    """Root logging for ``brain`` processes: ``fmt`` "text" or "json" (one object a line)."""
    handler = logging.StreamHandler()
    if fmt == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        ))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


@contextmanager
def scraped_by(principal: Principal | None) -> Iterator[None]:
    """Who the scrape run inside is for (None: anonymous): :class:`BrainCollector` shows them the
    brains they may read."""
    token = SCRAPER.set(principal)
    try:
        yield
    finally:
        SCRAPER.reset(token)


@dataclass(frozen=True)
class _Figures:
    name: str
    learned: int
    pending: int
    current: int
    versions: int
    replay: int
    counts: Counts
    feedback: tuple[int, int]  # (correct, wrong) served predictions later labelled
    drift: dict[str, int]  # drift events per signal


class BrainCollector(Collector):
    """Per-brain figures, for the brains the scraper may read (all of them with
    ``metrics_public_brains``; none to an anonymous scraper otherwise).

    A scan costs the same however long the history: one query for the brains, one for the versions
    (few: old ones are pruned), one indexed count per brain of its unlearned samples (at most
    :data:`PENDING_COUNT_LIMIT`), each replay buffer's size, and the job counts kept as jobs change
    (``service.job_counts``). Scrapes within ``metrics_cache_seconds`` share one scan."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._lock = threading.Lock()
        self._scanned: tuple[float, list[_Figures]] | None = None  # (until, figures)

    def describe(self) -> list:
        return []  # nothing to read at registration

    def collect(self) -> Iterator:
        viewer, public = SCRAPER.get(), self.rt.settings.metrics_public_brains
        if viewer is None and not public:
            return
        try:
            figures = self._figures()
        except Exception as exc:  # noqa: BLE001 - a scrape must answer, with the failure counted
            log.warning("brain metrics unavailable: %s", exc)
            failed = GaugeMetricFamily("brain_metrics_scrape_failed", "1 when the per-brain figures could not be read")
            failed.add_metric([], 1.0)
            yield failed
            return
        yield from _families([f for f in figures if public or viewer.can(f.name, "read")])

    def _figures(self) -> list[_Figures]:
        with self._lock:  # concurrent scrapes wait for one scan
            if self._scanned is not None and self._scanned[0] > time.monotonic():
                return self._scanned[1]
            figures = self._scan()
            self._scanned = (time.monotonic() + self.rt.settings.metrics_cache_seconds, figures)
            return figures

    def _scan(self) -> list[_Figures]:
        with self.rt.db.session(read_only=True) as s:
            brains = s.scalars(select(Brain).order_by(Brain.id)).all()
            versions = dict(s.execute(select(Version.brain_id, func.count()).group_by(Version.brain_id)).tuples().all())
            pending = {b.id: samplelog.pending(s, b.id, b.learned_position, limit=PENDING_COUNT_LIMIT) for b in brains}
            outcomes = {(b, bool(c)): n for b, c, n in s.execute(
                select(Feedback.brain_id, Feedback.correct, func.count()).group_by(Feedback.brain_id, Feedback.correct))}
            drifts: dict[int, dict[str, int]] = {}
            for b, signal, n in s.execute(select(DriftRecord.brain_id, DriftRecord.signal, func.count())
                                          .group_by(DriftRecord.brain_id, DriftRecord.signal)):
                drifts.setdefault(b, {})[signal] = n
        counts = self.rt.job_counts.read([b.id for b in brains])
        return [_Figures(name=b.name, learned=b.samples_learned, pending=pending[b.id], current=b.current_version or 0,
                         versions=versions.get(b.id, 0), replay=len(self.rt.replay(b)), counts=counts[b.id],
                         feedback=(outcomes.get((b.id, True), 0), outcomes.get((b.id, False), 0)),
                         drift=drifts.get(b.id, {}))
                for b in brains]


def _families(figures: list[_Figures]) -> Iterator:
    learned = CounterMetricFamily("brain_samples_learned", "Samples learned by wake jobs", labels=["brain"])
    pending = GaugeMetricFamily("brain_samples_pending", "Samples acknowledged, not yet learned (counted up to "
                                f"{PENDING_COUNT_LIMIT:,})", labels=["brain"])
    current = GaugeMetricFamily("brain_current_version", "The version that answers predictions", labels=["brain"])
    kept = GaugeMetricFamily("brain_versions", "Versions kept", labels=["brain"])
    replay = GaugeMetricFamily("brain_replay_samples", "Samples in the replay buffer", labels=["brain"])
    jobs = CounterMetricFamily("brain_jobs", "Jobs by kind and the state they entered (running: each attempt)",
                               labels=["brain", "kind", "state"])
    sleeps = SummaryMetricFamily("brain_sleep_seconds", "Consolidation time of succeeded sleeps", labels=["brain"])
    feedback = CounterMetricFamily("brain_feedback", "Served predictions later labelled, by outcome (prequential "
                                   "accuracy: correct / (correct + wrong))", labels=["brain", "outcome"])
    drift = CounterMetricFamily("brain_drift_events", "Drift events of served predictions, by signal (error, "
                                "confidence, input)", labels=["brain", "signal"])
    for f in figures:
        for signal, n in sorted(f.drift.items()):
            drift.add_metric([f.name, signal], float(n))
        if any(f.feedback):
            feedback.add_metric([f.name, "correct"], float(f.feedback[0]))
            feedback.add_metric([f.name, "wrong"], float(f.feedback[1]))
        learned.add_metric([f.name], float(f.learned))
        pending.add_metric([f.name], float(f.pending))
        current.add_metric([f.name], float(f.current))
        kept.add_metric([f.name], float(f.versions))
        replay.add_metric([f.name], float(f.replay))
        for kind, state, n in job_states(f.counts):
            jobs.add_metric([f.name, kind, state], n)
        if f.counts.get(SLEEPS):
            sleeps.add_metric([f.name], count_value=f.counts[SLEEPS], sum_value=f.counts.get(SLEEP_SECONDS, 0.0))
    yield from (learned, pending, current, kept, replay, jobs, sleeps, feedback, drift)
