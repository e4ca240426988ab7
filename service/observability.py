"""What the service tells the people who run it, beyond its answers.

- :class:`BrainCollector`: Prometheus figures per brain, read from the service's own records when
  ``/metrics`` is scraped (samples learned and pending, current version, versions kept, replay
  buffer size, jobs by kind and state, sleep seconds). Read at scrape time, they are the same
  whichever process did the work: the API itself (embedded) or a Celery worker (full stack).
- Request ids: ``_Observe`` (``service.app``) takes a request's ``X-Request-ID`` or makes one, puts
  it in :data:`REQUEST_ID` for the request's logs and answers with it; jobs log under
  ``job:<id>``.
- :func:`configure_logging`: text lines, or one JSON object a line (``BRAIN_LOG_FORMAT=json``,
  python-json-logger) carrying ``request_id``.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from service.runtime import Runtime
from service.tables import Brain, Job, Sample, Version

log = logging.getLogger(__name__)

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
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


class BrainCollector(Collector):
    """Per-brain figures from the database and the replay store, at scrape time."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def describe(self) -> list:
        return []  # nothing to read at registration

    def collect(self) -> Iterator:
        try:
            yield from self._collect()
        except Exception as exc:  # noqa: BLE001 - a scrape must answer, with the failure counted
            log.warning("brain metrics unavailable: %s", exc)
            failed = GaugeMetricFamily("brain_metrics_scrape_failed", "1 when the per-brain figures could not be read")
            failed.add_metric([], 1.0)
            yield failed

    def _collect(self) -> Iterator:
        learned = CounterMetricFamily("brain_samples_learned", "Samples learned by wake jobs", labels=["brain"])
        pending = GaugeMetricFamily("brain_samples_pending", "Samples acknowledged, not yet learned", labels=["brain"])
        current = GaugeMetricFamily("brain_current_version", "The version that answers predictions", labels=["brain"])
        kept = GaugeMetricFamily("brain_versions", "Versions kept", labels=["brain"])
        replay = GaugeMetricFamily("brain_replay_samples", "Samples in the replay buffer", labels=["brain"])
        jobs = CounterMetricFamily("brain_jobs", "Jobs by kind and state", labels=["brain", "kind", "state"])
        sleeps = SummaryMetricFamily("brain_sleep_seconds", "Consolidation time of succeeded sleeps", labels=["brain"])
        with self.rt.db.session() as s:
            brains = s.scalars(select(Brain).order_by(Brain.id)).all()
            name = {b.id: b.name for b in brains}
            unlearned = dict(s.execute(
                select(Sample.brain_id, func.count()).join(Brain, Brain.id == Sample.brain_id)
                .where(Sample.id > Brain.learned_position).group_by(Sample.brain_id)
            ).tuples().all())
            versions = dict(s.execute(select(Version.brain_id, func.count()).group_by(Version.brain_id)).tuples().all())
            job_counts = s.execute(select(Job.brain_id, Job.kind, Job.state, func.count())
                                   .group_by(Job.brain_id, Job.kind, Job.state)).tuples().all()
            sleep_results = s.execute(select(Job.brain_id, Job.result)
                                      .where(Job.kind == "sleep", Job.state == "succeeded")).tuples().all()
            for b in brains:
                learned.add_metric([b.name], float(b.samples_learned))
                pending.add_metric([b.name], float(unlearned.get(b.id, 0)))
                current.add_metric([b.name], float(b.current_version or 0))
                kept.add_metric([b.name], float(versions.get(b.id, 0)))
                replay.add_metric([b.name], float(len(self.rt.replay(b))))
        for brain_id, kind, state, n in job_counts:
            if brain_id in name:
                jobs.add_metric([name[brain_id], kind, state], float(n))
        totals: dict[int, list[float]] = {}
        for brain_id, result in sleep_results:
            seconds = (result or {}).get("seconds")
            if brain_id in name and isinstance(seconds, int | float):
                total = totals.setdefault(brain_id, [0, 0.0])
                total[0] += 1
                total[1] += float(seconds)
        for brain_id, (count, total) in totals.items():
            sleeps.add_metric([name[brain_id]], count_value=count, sum_value=total)
        yield from (learned, pending, current, kept, replay, jobs, sleeps)
