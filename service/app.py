"""The FastAPI application factory: ``create_app(settings)`` builds everything; nothing at import."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter, Histogram
from sqlalchemy.exc import OperationalError
from starlette.routing import Route

from service import schemas
from service.api import brains, fastjson, health, jobs, learning, metrics
from service.errors import BrainError
from service.inference import InferenceCache
from service.learning import check_sleep_due, recover
from service.locks import BrainLockTimeout
from service.runtime import Runtime, build_runtime
from service.serving import MicroBatcher, ServingCache
from service.settings import Settings

log = logging.getLogger(__name__)


class _SleepScheduler:
    """The embedded stand-in for Celery beat: checks sleep policies every few seconds."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="sleep-scheduler", daemon=True)

    def _loop(self) -> None:
        while not self.stop.wait(self.rt.settings.sleep_check_seconds):
            try:
                check_sleep_due(self.rt)
            except Exception:
                log.exception("sleep check failed")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)
        rt = build_runtime(settings)
        app.state.runtime = rt
        app.state.inference = InferenceCache(rt.versions)
        app.state.serving = ServingCache(rt, app.state.inference, settings.serving_ttl_seconds)
        app.state.batcher = MicroBatcher()
        rt.changes.subscribe()
        recover(rt, orphaned_jobs=not settings.uses_celery)
        scheduler = None
        if not settings.uses_celery:
            scheduler = _SleepScheduler(rt)
            scheduler.thread.start()
        try:
            yield
        finally:
            if scheduler is not None:
                scheduler.stop.set()
            app.state.batcher.close()
            rt.close()

    app = FastAPI(
        title="plastic-brain",
        version="0.1.0",
        description="A continual-learning service: stream labelled samples, predict at any time, "
        "and let the brain sleep to consolidate without forgetting.",
        lifespan=lifespan,
    )
    for module in (brains, learning, jobs, metrics, health):
        app.include_router(module.router)
    # the hot path, matched first and without FastAPI's parameter solving (same work, same errors)
    app.router.routes.insert(0, Route("/v1/brains/{name}/predict", learning.serve_predict, methods=["POST"]))
    _errors(app)
    _limits_and_metrics(app, settings)
    _openapi(app)
    return app


def _openapi(app: FastAPI) -> None:
    """The document FastAPI builds, plus the bodies of routes that parse their own (``fastjson``)."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = fastjson.add_schemas(build(), schemas.PredictIn, schemas.SamplesIn, schemas.EvaluateIn)
        return app.openapi_schema

    app.openapi = openapi


def _errors(app: FastAPI) -> None:
    @app.exception_handler(BrainError)
    async def _brain_error(_: Request, exc: BrainError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    @app.exception_handler(BrainLockTimeout)
    async def _busy(_: Request, exc: BrainLockTimeout) -> JSONResponse:
        return JSONResponse({"detail": f"{exc}; retry later"}, status_code=503)

    @app.exception_handler(OperationalError)
    async def _db_down(_: Request, exc: OperationalError) -> JSONResponse:
        log.warning("database unavailable: %s", exc)
        return JSONResponse({"detail": "the database is unavailable; retry later"}, status_code=503)

    try:
        from redis.exceptions import ConnectionError as RedisConnectionError
    except ImportError:  # pragma: no cover - redis is a dependency
        return

    @app.exception_handler(RedisConnectionError)
    async def _redis_down(_: Request, exc: RedisConnectionError) -> JSONResponse:
        log.warning("redis unavailable: %s", exc)
        return JSONResponse({"detail": "Redis is unavailable; retry later"}, status_code=503)


def _limits_and_metrics(app: FastAPI, settings: Settings) -> None:
    registry = CollectorRegistry()
    app.state.prometheus = registry
    requests = Counter(
        "brain_http_requests", "HTTP requests", ["method", "route", "status"], registry=registry
    )
    latency = Histogram(
        "brain_http_request_seconds", "HTTP request latency", ["method", "route"], registry=registry
    )

    app.add_middleware(_Observe, max_body=settings.max_body_bytes, requests=requests, latency=latency)


class _Observe:
    """Refuses bodies over the limit (413) and counts requests and their latency per route.

    Plain ASGI: Starlette's ``BaseHTTPMiddleware`` (``@app.middleware``) runs every request
    through an extra task and memory stream."""

    def __init__(self, app, *, max_body: int, requests: Counter, latency: Histogram) -> None:
        self.app, self.max_body, self.requests, self.latency = app, max_body, requests, latency

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_body:
            refuse = JSONResponse(
                {"detail": f"request body of {int(length)} bytes exceeds the limit of {self.max_body}"},
                status_code=413,
            )
            await refuse(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_observed(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            self.requests.labels(scope["method"], path, str(status)).inc()
            self.latency.labels(scope["method"], path).observe(time.perf_counter() - started)
