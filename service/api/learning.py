"""Learning and inference: samples, predict, feedback, evaluate, sleep, meta-train."""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, nullcontext

import orjson
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from service import auth, brains, feedback, meta_sets, samplelog, schemas
from service.api import fastjson
from service.api.deps import CanWrite, RuntimeDep, caller_of, can_read
from service.drift_watch import DriftWatch
from service.errors import Conflict
from service.inputs import check_limits, decode
from service.runtime import Runtime
from service.serving import MicroBatcher, ServingCache
from service.waiting import RETRY_AFTER_SECONDS, JobWaiter, TooManyWaiters

router = APIRouter(prefix="/v1/brains", tags=["learning"], route_class=fastjson.SafeErrorsRoute)


def _waiting(request: Request, wait: bool) -> AbstractContextManager[JobWaiter | None]:
    """With ``wait``: the process's job waiter, a slot taken (``service.waiting``); a route does its
    synchronous part in a worker thread, then awaits its job's end on the event loop. All slots
    taken: 503 with Retry-After before the request has done anything, so that it can be sent again."""
    if not wait:
        return nullcontext()
    try:
        return request.app.state.waiter.slot()
    except TooManyWaiters as exc:
        raise HTTPException(503, f"{exc}; retry later",
                            headers={"Retry-After": str(RETRY_AFTER_SECONDS)}) from None


@router.post("/{name}/samples", status_code=status.HTTP_202_ACCEPTED, response_model=schemas.SamplesAccepted,
             openapi_extra=fastjson.body_schema(schemas.SamplesIn))
async def post_samples(
    name: str,
    request: Request,
    rt: RuntimeDep,
    _: CanWrite,
    wait: bool = Query(False, description="Answer when the samples have been learned."),
) -> schemas.SamplesAccepted:
    """Append labelled samples to the brain's log and queue a wake job that learns them."""
    body = await fastjson.parse_off_loop(schemas.SamplesIn, await request.body())
    check_limits(body.samples, field="samples", max_items=rt.settings.max_batch, setting="BRAIN_MAX_BATCH",
                 max_text_chars=rt.settings.max_text_chars)
    with _waiting(request, wait) as waiter:
        out = await run_in_threadpool(_accept, rt, name, body)
        if waiter is not None and out.job is not None:
            job = await waiter.wait(out.job, rt.settings.wait_timeout_seconds)
            out.state = job.state
            if job.state == "succeeded":  # this job may have found its samples learned by an earlier one
                out.version = job.version
        return out


def _accept(rt: Runtime, name: str, body: schemas.SamplesIn) -> schemas.SamplesAccepted:
    brain_id, accepted, duplicates = brains.ingest(rt, name=name, body=body)
    if not accepted and not _has_unlearned(rt, brain_id):
        return schemas.SamplesAccepted(accepted=0, duplicates=duplicates, job=None)
    # accepted == 0 with samples still unlearned: a client resending a batch whose first request
    # was logged but never answered (the API died, or the job could not be sent); a job learns them
    job_id = rt.jobs.submit("wake", brain_id, {"samples": accepted}, join_queued=True)
    return schemas.SamplesAccepted(accepted=accepted, duplicates=duplicates, job=job_id, state="queued")


def _has_unlearned(rt: Runtime, brain_id: int) -> bool:
    with rt.db.session(read_only=True) as s:
        return samplelog.has_pending(s, brain_id)


async def serve_predict(request: Request) -> Response:
    """The current version's best label and its probability for each input (restricted to a
    task's labels when ``task`` is given). Served from memory: no database round trip while the
    brain has not changed; concurrent requests share forward passes."""
    name = request.path_params["name"]
    # not Depends: this route is the hot path; the gate (service.api.authgate) found the caller
    auth.require(await caller_of(request), name, "read")
    serving: ServingCache = request.app.state.serving
    batcher: MicroBatcher = request.app.state.batcher
    body = await fastjson.parse_off_loop(schemas.PredictIn, await request.body())
    limits = request.app.state.runtime.settings
    check_limits(body.inputs, field="inputs", max_items=limits.max_predict_inputs, setting="BRAIN_MAX_PREDICT_INPUTS",
                 max_text_chars=limits.max_text_chars)
    entry = serving.peek(name) or await run_in_threadpool(serving.load, name)
    if entry.raw_inputs and all(item.x is not None or item.x_b64 is not None for item in body.inputs):
        x = decode(body.inputs, entry.kind, entry.shape, field="inputs", encoder=entry.encoder)
    else:  # images and encoders (pretrained networks) are slow: not on the event loop
        x = await run_in_threadpool(decode, body.inputs, entry.kind, entry.shape, field="inputs",
                                    encoder=entry.encoder, max_pixels=limits.max_decoded_pixels)
    entry.check_width(x)
    idx, conf = await batcher.predict(entry, body.task, x)
    labels, predicted, confidence = entry.labels, idx.tolist(), conf.tolist()
    now = time.time()
    rid = feedback.request_id(now)
    request.app.state.served.keep(rid, feedback.Served(
        brain_id=entry.brain_id, version=entry.version, task=body.task, at=now, x=x, predicted=predicted,
        confidence=confidence, pixels=entry.kind == "image" and entry.raw_inputs))
    return Response(orjson.dumps({
        "version": entry.version,
        "predictions": [{"id": pid, "label": labels[i], "confidence": c}
                        for pid, i, c in zip(feedback.prediction_ids(rid, len(predicted)), predicted, confidence)],
    }), media_type="application/json")


PREDICT_PATH = f"{router.prefix}/{{name}}/predict"
#: The predict route as the OpenAPI document describes it. ``service.app`` serves the path with a
#: plain Starlette route that calls :func:`serve_predict` without FastAPI's route matching and
#: parameter solving (a third of a small request's time); this route object is never mounted:
#: it declares the same handler's path parameter, auth, body and answer to the document.
PREDICT_DOC = APIRoute(PREDICT_PATH, serve_predict, methods=["POST"], tags=["learning"], name="predict",
                       dependencies=[Depends(can_read)], response_model=schemas.PredictOut,
                       openapi_extra=fastjson.body_schema(schemas.PredictIn))


@router.post("/{name}/feedback", status_code=status.HTTP_202_ACCEPTED, response_model=schemas.FeedbackAccepted,
             openapi_extra=fastjson.body_schema(schemas.FeedbackIn),
             responses={410: {"description": "The prediction is no longer kept for feedback."}})
async def post_feedback(name: str, request: Request, rt: RuntimeDep, _: CanWrite) -> schemas.FeedbackAccepted:
    """True labels for served predictions: each prediction's input becomes a sample (its id is the
    sample id: feedback sent twice is learned once), learned by a wake job like any other, and the
    prediction counts towards the brain's prequential accuracy (``GET .../metrics``). Inputs are
    kept ``BRAIN_FEEDBACK_WINDOW_SECONDS`` by the API process that served them: later, 410."""
    body = await fastjson.parse_off_loop(schemas.FeedbackIn, await request.body())
    check_limits(body.feedback, field="feedback", max_items=rt.settings.max_batch, setting="BRAIN_MAX_BATCH",
                 max_text_chars=rt.settings.max_text_chars)
    return await run_in_threadpool(_feedback, rt, request.app.state.served, request.app.state.drift, name, body)


def _feedback(rt: Runtime, served: feedback.ServedPredictions, watch: DriftWatch, name: str,
              body: schemas.FeedbackIn) -> schemas.FeedbackAccepted:
    with rt.db.session() as s:
        done = feedback.record(s, rt.settings, served, name=name, body=body)
    for version in {v for v, _ in done.outcomes}:
        watch.labelled(done.brain_id, [ok for v, ok in done.outcomes if v == version], version)
    job = rt.jobs.submit("wake", done.brain_id, {"samples": done.accepted}, join_queued=True) if done.accepted else None
    return schemas.FeedbackAccepted(accepted=done.accepted, duplicates=done.duplicates, job=job)


@router.post("/{name}/evaluate", response_model=schemas.EvaluateOut,
             openapi_extra=fastjson.body_schema(schemas.EvaluateIn))
async def evaluate(name: str, request: Request, rt: RuntimeDep, _: CanWrite) -> schemas.EvaluateOut:
    """Accuracy of the current version on held-out samples (never learned from), recorded for the
    accuracy matrix of ``GET .../metrics``."""
    body = await fastjson.parse_off_loop(schemas.EvaluateIn, await request.body())
    check_limits(body.samples, field="samples", max_items=rt.settings.max_batch, setting="BRAIN_MAX_BATCH",
                 max_text_chars=rt.settings.max_text_chars)
    return await run_in_threadpool(_evaluate, rt, request.app.state.serving, name, body)


def _evaluate(rt: Runtime, serving: ServingCache, name: str, body: schemas.EvaluateIn) -> schemas.EvaluateOut:
    entry = serving.load(name)  # read now: an evaluation is recorded against the current version
    x = decode(body.samples, entry.kind, entry.shape, field="samples", encoder=entry.encoder,
               max_pixels=rt.settings.max_decoded_pixels)
    entry.check_width(x)
    index = brains.label_index(entry.labels)
    truth = [index.get(brains.label_key(smp.label)) for smp in body.samples]
    try:
        idx = entry.forward(x, entry.mask(body.task if body.mode == "task" else None))[0].tolist()
    except Conflict:
        idx = [None] * len(truth)  # nothing learned yet: every answer is wrong
    accuracy = sum(int(t is not None and t == p) for t, p in zip(truth, idx)) / len(truth)
    brains.record_evaluation(rt, brain_id=entry.brain_id, version=entry.version, task=body.task, mode=body.mode,
                             accuracy=accuracy, samples=len(truth))
    return schemas.EvaluateOut(version=entry.version, task=body.task, mode=body.mode, accuracy=accuracy,
                               samples=len(truth))


@router.post("/{name}/sleep", status_code=status.HTTP_202_ACCEPTED, response_model=schemas.JobAccepted)
async def sleep(
    name: str,
    request: Request,
    rt: RuntimeDep,
    _: CanWrite,
    wait: bool = Query(False, description="Answer when the sleep has finished."),
) -> schemas.JobAccepted:
    """Consolidate now: replay and distill, then publish a new version. Poll ``GET /v1/jobs/{job}``."""
    with _waiting(request, wait) as waiter:
        return await _job_answer(rt, waiter, await run_in_threadpool(_submit_sleep, rt, name))


def _submit_sleep(rt: Runtime, name: str) -> str:
    with rt.db.session(read_only=True) as s:
        brain_id = brains.get_brain(s, name).id
    return rt.jobs.submit("sleep", brain_id, {"reason": "request"})


@router.post("/{name}/meta-train", status_code=status.HTTP_202_ACCEPTED, response_model=schemas.JobAccepted)
async def meta_train(
    name: str,
    body: schemas.MetaTrainIn,
    request: Request,
    rt: RuntimeDep,
    _: CanWrite,
    wait: bool = Query(False, description="Answer when the meta-training has finished."),
) -> schemas.JobAccepted:
    """Meta-learn how to learn (strategies that can, e.g. "anml") on a background set of classes,
    then publish a version of kind "meta". The background samples and labels are the set's own:
    they never enter the brain's labels, tasks, sample log or replay. Poll ``GET /v1/jobs/{job}``."""
    check_limits(body.samples, field="samples", max_items=rt.settings.max_meta_samples,
                 setting="BRAIN_MAX_META_SAMPLES", max_text_chars=rt.settings.max_text_chars)
    with _waiting(request, wait) as waiter:
        return await _job_answer(rt, waiter, await run_in_threadpool(meta_sets.submit, rt, name=name, body=body))


async def _job_answer(rt: Runtime, waiter: JobWaiter | None, job_id: str) -> schemas.JobAccepted:
    """The submitted job: with a waiter, its end state (or its state when the wait timeout passed),
    else "queued"."""
    if waiter is None:
        return schemas.JobAccepted(job=job_id, state="queued")
    job = await waiter.wait(job_id, rt.settings.wait_timeout_seconds)
    return schemas.JobAccepted(job=job_id, state=job.state, result=job.result, error=job.error)
