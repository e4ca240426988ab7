"""The FastAPI application factory: ``create_app(settings)`` builds everything; nothing at import."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import torch
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter, Histogram
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException
from starlette.routing import Match, Route
from starlette.staticfiles import StaticFiles

from service import auth
from service.api import (
    activity,
    brains,
    fastjson,
    health,
    jobs,
    keys,
    learning,
    metrics,
    strategies,
)
from service.api.authgate import AuthGate
from service.drift_watch import DriftWatch
from service.errors import BrainError
from service.feedback import served_predictions
from service.job_runner import embedded_runner
from service.locks import BrainLockTimeout
from service.observability import REQUEST_ID, BrainCollector
from service.runtime import build_runtime
from service.scheduling import SleepScheduler, recover
from service.serving import LearnerCache, MicroBatcher, ServingCache
from service.settings import Settings
from service.waiting import JobWaiter

log = logging.getLogger(__name__)
access = logging.getLogger("service.access")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    auth.check_settings(settings)  # BRAIN_REQUIRE_AUTH without BRAIN_ADMIN_KEY: refuse to start

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)
        rt = build_runtime(settings, runner=embedded_runner())  # this process is the composition root
        app.state.runtime = rt
        app.state.prometheus.register(BrainCollector(rt))  # per-brain figures, read at scrape time
        app.state.auth = auth.Authenticator(settings, rt.db)
        if not app.state.auth.auth_on():
            log.warning("authentication is OFF: no BRAIN_ADMIN_KEY and no API keys, so the API is open to "
                        "anyone who can reach it (set BRAIN_ADMIN_KEY, or BRAIN_REQUIRE_AUTH=true to refuse this)")
        app.state.learners = LearnerCache(rt.versions)
        app.state.serving = ServingCache(rt, app.state.learners, settings.serving_ttl_seconds)
        app.state.batcher = MicroBatcher()
        app.state.served = served_predictions(settings, rt.redis)
        app.state.drift = DriftWatch(rt, app.state.served, interval=settings.drift_check_seconds)
        app.state.waiter = JobWaiter(rt.db, rt.changes, max_waiters=settings.max_waiters,  # ?wait=true
                                     recheck_seconds=settings.wait_recheck_seconds)
        app.state.waiter.start()
        rt.changes.subscribe()
        recover(rt, orphaned_jobs=not settings.uses_celery)
        scheduler = None
        if not settings.uses_celery:
            scheduler = SleepScheduler(rt)
            scheduler.thread.start()
        try:
            yield
        finally:
            if scheduler is not None:
                scheduler.stop.set()
            await app.state.waiter.close()
            app.state.batcher.close()
            app.state.served.close()
            app.state.drift.close()
            rt.close()

    app = FastAPI(
        title="plastic-brain",
        version="0.1.0",
        description="A continual-learning service: stream labelled samples, predict at any time, "
        "and let the brain sleep to consolidate without forgetting.",
        lifespan=lifespan,
    )
    for module in (brains, strategies, learning, jobs, metrics, activity, keys, health):
        app.include_router(module.router)
    # the dashboard: static files, no build step; it reads the API with the key a person types in
    app.mount("/ui", StaticFiles(directory=Path(__file__).parent / "ui", html=True), name="ui")
    # the hot path, without FastAPI's parameter solving (same errors); learning.PREDICT_DOC documents it
    app.router.routes.insert(0, _ScopedRoute(learning.PREDICT_PATH, learning.serve_predict, methods=["POST"]))
    _errors(app)
    # auth and metrics (issue 14): every request's key is checked before its body is read; added
    # before _Observe, so inside it (request ids, counts and the declared-size 413 come first)
    app.add_middleware(AuthGate)
    _limits_and_metrics(app, settings)
    _openapi(app)
    return app


def _openapi(app: FastAPI) -> None:
    """The document FastAPI builds from its routes and the plain predict route's description
    (``learning.PREDICT_DOC``), plus the bodies of routes that parse their own (``fastjson``)."""

    def openapi() -> dict:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, description=app.description,
                              routes=[*app.routes, learning.PREDICT_DOC])
            app.openapi_schema = fastjson.add_schemas(doc)
        return app.openapi_schema

    app.openapi = openapi


def _errors(app: FastAPI) -> None:
    @app.exception_handler(BrainError)
    async def _brain_error(_: Request, exc: BrainError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    @app.exception_handler(BrainLockTimeout)
    async def _busy(_: Request, exc: BrainLockTimeout) -> JSONResponse:
        return JSONResponse({"detail": f"{exc}; retry later"}, status_code=503,
                            headers={"Retry-After": str(max(1, round(exc.retry_after)))})

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

    from kombu.exceptions import OperationalError as BrokerUnavailable

    @app.exception_handler(BrokerUnavailable)
    async def _broker_down(_: Request, exc: BrokerUnavailable) -> JSONResponse:
        log.warning("job broker unavailable: %s", exc)
        return JSONResponse({"detail": "the job broker (Redis) is unavailable; retry later"}, status_code=503)


class _ScopedRoute(Route):
    """A plain Starlette route that puts itself in the scope, as FastAPI's routes do, so that the
    metrics count its requests under its path."""

    def matches(self, scope):
        match, child = super().matches(scope)
        if match != Match.NONE:
            child["route"] = self
        return match, child


def _limits_and_metrics(app: FastAPI, settings: Settings) -> None:
    registry = CollectorRegistry()
    app.state.prometheus = registry
    requests = Counter(
        "brain_http_requests", "HTTP requests", ["method", "route", "status"], registry=registry
    )
    latency = Histogram(
        "brain_http_request_seconds", "HTTP request latency", ["method", "route"], registry=registry
    )

    app.add_middleware(_Observe, max_body=settings.max_body_bytes, requests=requests, latency=latency,
                       access_log=settings.log_format == "json")


_REQUEST_ID_OK = re.compile(rb"^[A-Za-z0-9._:-]{1,64}$")


def _request_id(given: bytes | None) -> str:
    """The client's ``X-Request-ID`` when it is a sane token, else a new one."""
    return given.decode() if given and _REQUEST_ID_OK.match(given) else uuid.uuid4().hex


class _BodyTooLarge(HTTPException):
    """Raised by the body reader of a request without Content-Length once the body passes the
    limit: FastAPI and Starlette turn an ``HTTPException`` met while reading into its response."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds the limit of {limit} bytes (BRAIN_MAX_BODY_BYTES)")


class _Observe:
    """Refuses bodies over the limit (413) and counts requests and their latency per route.

    The limit holds for a body without Content-Length (chunked) too: it is counted as it is read,
    and the read that passes the limit raises :class:`_BodyTooLarge`, so no more of it is read.

    Plain ASGI: Starlette's ``BaseHTTPMiddleware`` (``@app.middleware``) runs every request
    through an extra task and memory stream."""

    def __init__(self, app, *, max_body: int, requests: Counter, latency: Histogram, access_log: bool) -> None:
        self.app, self.max_body, self.requests, self.latency = app, max_body, requests, latency
        self.access_log = access_log  # one structured line a request (JSON logs; uvicorn's otherwise)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        request_id = _request_id(headers.get(b"x-request-id"))
        token = REQUEST_ID.set(request_id)
        try:
            await self._observe(scope, receive, send, headers, request_id.encode())
        finally:
            REQUEST_ID.reset(token)

    async def _observe(self, scope, receive, send, headers: dict, request_id: bytes) -> None:
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_body:
            refuse = JSONResponse(
                {"detail": f"request body of {int(length)} bytes exceeds the limit of {self.max_body} "
                 "(BRAIN_MAX_BODY_BYTES)"},
                status_code=413,
            )
            await refuse(scope, receive, send)
            return
        if not length.isdigit():  # the server holds a body with Content-Length to it; others are counted
            receive = self._bounded(receive)
        started = time.perf_counter()
        status = 500
        responded = False

        async def send_observed(message) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                status, responded = message["status"], True
                message = {**message, "headers": [*message.get("headers", ()), (b"x-request-id", request_id)]}
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        except _BodyTooLarge as exc:  # read where no handler answers it
            if responded:
                raise
            await JSONResponse({"detail": exc.detail}, status_code=413)(scope, receive, send_observed)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            elapsed = time.perf_counter() - started
            self.requests.labels(scope["method"], path, str(status)).inc()
            self.latency.labels(scope["method"], path).observe(elapsed)
            if self.access_log:
                access.info("%s %s %s %.1f ms", scope["method"], scope["path"], status, 1000 * elapsed,
                            extra={"method": scope["method"], "path": scope["path"], "route": path,
                                   "status": status, "ms": round(1000 * elapsed, 2)})

    def _bounded(self, receive):
        read = 0

        async def bounded_receive():
            nonlocal read
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if read > self.max_body:
                    raise _BodyTooLarge(self.max_body)
            return message

        return bounded_receive
