"""The API's calls, written once without I/O: each is a generator that yields what to send
(:class:`Call`) or how long to pause (:class:`Pause`) and is sent back the parsed answer. The sync
and async clients (``brain_client.client``) only carry these out, so both behave the same.

Requests are plain JSON built here (the service validates them: a bad one is a 422, raised as
``Invalid``); answers are the client's own models of the service's (``brain_client.wire``), checked
against the service's OpenAPI document by the tests.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from pydantic_core import to_jsonable_python

from brain_client import wire
from brain_client.errors import JobFailed

T = TypeVar("T")


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    json: Any = None
    params: dict[str, Any] | None = None
    idempotent: bool = True  # safe to send twice (see brain_client.retry)


@dataclass(frozen=True)
class Pause:
    seconds: float


Steps = Generator["Call | Pause", Any, T]


def _model(cls: type[T], answer: Any) -> T:
    return cls.model_validate(answer)  # type: ignore[attr-defined]


# -- inputs ----------------------------------------------------------------------------------------
def encode_inputs(inputs: Any) -> list[dict[str, Any]]:
    """The request form of a batch of inputs.

    - a numeric numpy array ``[N, ...]``: each row as ``x_b64`` (little-endian float32), the compact form;
    - a sequence whose items are each: a ``str`` (text brains), ``bytes`` (a PNG/JPEG, image brains),
      a numpy array or a (nested) list of numbers, or a dict already in request form.
    """
    if isinstance(inputs, np.ndarray) and inputs.dtype.kind in "fiub":
        if inputs.ndim < 2:
            raise ValueError(f"a batch of inputs is [N, ...]; got an array of shape {list(inputs.shape)}")
        rows = np.ascontiguousarray(inputs, dtype="<f4").reshape(len(inputs), -1)
        return [{"x_b64": base64.b64encode(row.tobytes()).decode("ascii")} for row in rows]
    if isinstance(inputs, (str, bytes)) or not isinstance(inputs, Sequence | np.ndarray):
        raise TypeError("inputs is a batch: a numpy array [N, ...] or a sequence of inputs")
    return [_encode_one(item) for item in inputs]


def _encode_one(item: Any) -> dict[str, Any]:
    if isinstance(item, dict):
        return dict(item)
    if isinstance(item, str):
        return {"text": item}
    if isinstance(item, bytes | bytearray | memoryview):
        return {"image": base64.b64encode(bytes(item)).decode("ascii")}
    if isinstance(item, np.ndarray):
        return {"x_b64": base64.b64encode(np.ascontiguousarray(item, dtype="<f4").tobytes()).decode("ascii")}
    if isinstance(item, Sequence):
        return {"x": list(item)}
    raise TypeError(f"cannot send an input of type {type(item).__name__}")


def _label(value: Any) -> str | int:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise TypeError(f"a label is a string or an integer, got {value!r}")
    return value


def _samples(inputs: Any, labels: Sequence[Any], ids: Sequence[str] | None) -> list[dict[str, Any]]:
    encoded = encode_inputs(inputs)
    if len(encoded) != len(labels) or (ids is not None and len(ids) != len(labels)):
        raise ValueError(f"{len(encoded)} inputs, {len(labels)} labels"
                         + (f" and {len(ids)} ids" if ids is not None else "") + ": they must be as many")
    samples = [{**x, "label": _label(y)} for x, y in zip(encoded, labels)]
    for sample, sample_id in zip(samples, ids or ()):
        sample["id"] = str(sample_id)
    return samples


# -- results that are the client's own -------------------------------------------------------------
@dataclass
class Learned:
    """What ``learn`` did over all its requests."""

    accepted: int = 0
    duplicates: int = 0
    jobs: list[str] = field(default_factory=list)
    version: int | None = None  # with wait=True: the version that includes the samples
    ids: list[str] = field(default_factory=list)  # the samples' ids, generated when not given


# -- brains ----------------------------------------------------------------------------------------
def create_brain(name: str, *, kind: str, shape: Sequence[int], **options: Any) -> Steps[wire.BrainOut]:
    """``options``: the other fields of a brain's creation (strategy, encoder, params, max_labels,
    sleep_policy, replay, seed), as JSON values or wire models; the service checks them all."""
    body = {"name": name, "input": {"kind": kind, "shape": [int(d) for d in shape]}, **to_jsonable_python(options)}
    answer = yield Call("POST", "/v1/brains", json=body, idempotent=False)
    return _model(wire.BrainOut, answer)


def list_brains() -> Steps[list[wire.BrainOut]]:
    answer = yield Call("GET", "/v1/brains")
    return _model(wire.BrainList, answer).brains


def get_brain(name: str) -> Steps[wire.BrainOut]:
    return _model(wire.BrainOut, (yield Call("GET", f"/v1/brains/{name}")))


def update_brain(name: str, **changes: Any) -> Steps[wire.BrainOut]:
    """``changes``: ``params`` and/or ``sleep_policy``, as JSON values or wire models."""
    return _model(wire.BrainOut, (yield Call("PATCH", f"/v1/brains/{name}", json=to_jsonable_python(changes))))


def delete_brain(name: str) -> Steps[None]:
    yield Call("DELETE", f"/v1/brains/{name}", idempotent=False)


def tasks(name: str) -> Steps[list[wire.TaskOut]]:
    return _model(wire.TaskList, (yield Call("GET", f"/v1/brains/{name}/tasks"))).tasks


def versions(name: str) -> Steps[wire.VersionList]:
    return _model(wire.VersionList, (yield Call("GET", f"/v1/brains/{name}/versions")))


def promote(name: str, number: int) -> Steps[wire.VersionOut]:
    answer = yield Call("POST", f"/v1/brains/{name}/versions/{int(number)}/promote")  # idempotent: same pointer
    return _model(wire.VersionOut, answer)


def metrics(name: str) -> Steps[wire.MetricsOut]:
    return _model(wire.MetricsOut, (yield Call("GET", f"/v1/brains/{name}/metrics")))


# -- learning and predicting -------------------------------------------------------------------------
def learn(name: str, inputs: Any, labels: Sequence[Any], *, task: str, ids: Sequence[str] | None = None,
          wait: bool = False, chunk: int = 512) -> Steps[Learned]:
    """Send labelled samples in requests of at most ``chunk``. Every sample carries an id (a new
    UUID unless ``ids`` gives them), so a request retried after a lost answer is learned once.
    With ``wait``, the last request answers when everything sent has been learned."""
    if chunk < 1:
        raise ValueError("chunk must be at least 1")
    ids = [str(i) for i in ids] if ids is not None else [str(uuid.uuid4()) for _ in range(len(labels))]
    samples = _samples(inputs, labels, ids)
    out = Learned(ids=ids)
    for start in range(0, len(samples), chunk):
        last = start + chunk >= len(samples)
        answer = yield Call("POST", f"/v1/brains/{name}/samples", json={"task": task, "samples": samples[start:start + chunk]},
                            params={"wait": "true"} if wait and last else None)
        got = _model(wire.SamplesAccepted, answer)
        out.accepted += got.accepted
        out.duplicates += got.duplicates
        if got.job and got.job not in out.jobs:
            out.jobs.append(got.job)
        if wait and last:
            if got.state == "failed":
                raise JobFailed(got)
            out.version = got.version
    if wait and out.version is None:  # every sample was a duplicate: the current version has them
        out.version = (yield from get_brain(name)).current_version
    return out


def predict(name: str, inputs: Any, *, task: str | None = None) -> Steps[wire.PredictOut]:
    body: dict[str, Any] = {"inputs": encode_inputs(inputs)}
    if task is not None:
        body["task"] = task
    return _model(wire.PredictOut, (yield Call("POST", f"/v1/brains/{name}/predict", json=body)))


def feedback(name: str, predictions: Sequence[str], labels: Sequence[Any], *,
             task: str | None = None) -> Steps[wire.FeedbackAccepted]:
    """The true labels of served predictions (their ids from a predict answer): each input served
    becomes a sample; feedback sent twice is learned once."""
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions but {len(labels)} labels")
    body: dict[str, Any] = {"feedback": [{"prediction": str(p), "label": _label(y)} for p, y in zip(predictions, labels)]}
    if task is not None:
        body["task"] = task
    return _model(wire.FeedbackAccepted, (yield Call("POST", f"/v1/brains/{name}/feedback", json=body)))


def evaluate(name: str, inputs: Any, labels: Sequence[Any], *, task: str, mode: str = "class") -> Steps[wire.EvaluateOut]:
    body = {"task": task, "mode": mode, "samples": _samples(inputs, labels, None)}
    return _model(wire.EvaluateOut, (yield Call("POST", f"/v1/brains/{name}/evaluate", json=body, idempotent=False)))


def sleep(name: str, *, wait: bool = False, timeout: float = 600.0, poll: float = 0.25) -> Steps[wire.JobOut | wire.JobAccepted]:
    """Start a sleep; with ``wait``, follow its job to the end (raises JobFailed if it fails)."""
    answer = _model(wire.JobAccepted, (yield Call("POST", f"/v1/brains/{name}/sleep", idempotent=False)))
    if not wait:
        return answer
    return (yield from wait_job(answer.job, timeout=timeout, poll=poll))


# -- jobs ------------------------------------------------------------------------------------------
def get_job(job_id: str) -> Steps[wire.JobOut]:
    return _model(wire.JobOut, (yield Call("GET", f"/v1/jobs/{job_id}")))


def wait_job(job_id: str, *, timeout: float = 600.0, poll: float = 0.25, on_progress: Any = None) -> Steps[wire.JobOut]:
    """Poll the job until it ends; ``on_progress(job)`` sees every state read on the way. Raises
    JobFailed when it failed and TimeoutError when it is still running after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        job = yield from get_job(job_id)
        if on_progress is not None:
            on_progress(job)
        if job.state == "succeeded":
            return job
        if job.state == "failed":
            raise JobFailed(job)
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} is still {job.state} after {timeout:.0f} s")
        yield Pause(poll)


# -- keys and health -------------------------------------------------------------------------------
def create_key(name: str, *, brains: dict[str, str] | None = None, admin: bool = False) -> Steps[wire.KeyCreated]:
    body = {"name": name, "brains": brains or {}, "admin": admin}
    return _model(wire.KeyCreated, (yield Call("POST", "/v1/keys", json=body, idempotent=False)))


def list_keys() -> Steps[list[wire.KeyOut]]:
    return _model(wire.KeyList, (yield Call("GET", "/v1/keys"))).keys


def revoke_key(key_id: int | str) -> Steps[None]:
    yield Call("DELETE", f"/v1/keys/{key_id}")


def ready() -> Steps[dict[str, Any]]:
    return (yield Call("GET", "/readyz"))

