"""The Celery application of the full stack: queues, routing, reliability settings, beat schedule.

Built by :func:`create_celery` from settings (no import-time globals); ``brain worker`` and
``brain beat`` start it. Jobs are long and must survive a worker's death, so messages are acked
after the job (``acks_late``), re-queued when the worker is lost, and prefetched one at a time.
Redis is also the result backend, for the chord of a sharded wake alone (JSON answers).
"""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue

from service.jobs import CHECK_SLEEP_TASK, QUEUES, result_backend_config
from service.settings import Settings
from workers import tasks


def create_celery(settings: Settings) -> Celery:
    if not settings.broker_url:
        raise SystemExit("the worker needs BRAIN_REDIS_URL (or BRAIN_BROKER_URL) to reach its broker")
    app = Celery("plastic_brain", broker=settings.broker_url)
    app.conf.update(
        task_queues=[Queue(name, Exchange(name), routing_key=name) for name in (*QUEUES, "schedule")],
        task_default_queue="wake",
        task_routes={CHECK_SLEEP_TASK: {"queue": "schedule"}},
        task_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        # A message taken by a worker that vanished (killed, cut off) is delivered again once the
        # visibility timeout passed: kombu's Redis transport looks every 10 s, and scans on every
        # look (its default, every 10th, made that up to 100 s later).
        broker_transport_options={"visibility_timeout": int(settings.lock_timeout_seconds) + 60,
                                  "unacked_restore_throttle": 1},
        worker_hijack_root_logger=False,
        beat_schedule={
            "check-sleep-policies": {"task": CHECK_SLEEP_TASK, "schedule": settings.sleep_check_seconds},
        },
        timezone="UTC",
        # counts a sharded wake's chord (service.sharding); only its shards keep results, as JSON
        **result_backend_config(settings.redis_url),
    )
    tasks.register(app, settings)
    return app
