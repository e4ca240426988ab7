"""The sync and async clients: they carry out ``brain_client.calls`` over httpx, with retries.

    from brain_client import Client
    with Client("http://127.0.0.1:8000", api_key="pb_...") as client:
        brain = client.create_brain("digits", kind="vector", shape=[784])
        brain.learn(x, y, task="t1", wait=True)
        print(brain.predict(x[:5]).predictions)

``AsyncClient`` has the same methods; with it, ``await`` each call (``Brain`` methods included).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any, Self

import httpx

from brain_client import calls
from brain_client.calls import Call, Pause, Steps
from brain_client.errors import error_for
from brain_client.retry import RETRY_STATUSES, RetryPolicy

DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=5.0)


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _pause_after(call: Call, delays: Iterator[float], response: httpx.Response | None,
                 error: httpx.TransportError | None) -> float | None:
    """Seconds to wait before sending ``call`` again, or None: done (see brain_client.retry)."""
    if response is not None:
        retry = response.status_code in RETRY_STATUSES and (call.idempotent or response.status_code == 503)
    else:
        retry = call.idempotent or isinstance(error, httpx.ConnectError)  # a failed connect sent nothing
    delay = next(delays, None) if retry else None
    if delay is not None and response is not None:
        delay = RetryPolicy.retry_after(response.headers, delay)
    return delay


def _answer(call: Call, response: httpx.Response | None, error: httpx.TransportError | None) -> Any:
    """The parsed answer; the transport error, or the service's as a BrainAPIError, raised."""
    if error is not None:
        raise error
    assert response is not None
    if response.is_success:
        return response.json() if response.content else None
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    raise error_for(response.status_code, detail, method=call.method, path=call.path)


class _Api:
    """The client's calls, shared by both clients; ``_run`` carries one out (or returns an awaitable)."""

    def __init__(self, http: Any, *, own_http: bool, api_key: str | None, retry: RetryPolicy | None) -> None:
        self.http, self._own_http = http, own_http
        self.retry = retry or RetryPolicy()
        self.headers = _headers(api_key)

    def _run(self, steps: Steps[Any]) -> Any:  # pragma: no cover - both clients override it
        raise NotImplementedError

    def brain(self, name: str) -> Brain:
        """A handle on an existing brain (nothing is sent)."""
        return Brain(self, name)

    def create_brain(self, name: str, *, kind: str = "vector", shape: list[int] | tuple[int, ...], **options: Any):
        """Create a brain; ``options`` are BrainCreate's fields (strategy, encoder, params, max_labels,
        sleep_policy, replay, seed). Returns its BrainOut (``client.brain(name)`` for a handle)."""
        return self._run(calls.create_brain(name, kind=kind, shape=shape, **options))

    def brains(self):
        return self._run(calls.list_brains())

    def job(self, job_id: str):
        return self._run(calls.get_job(job_id))

    def wait(self, job_id: str, *, timeout: float = 600.0, poll: float = 0.25, on_progress: Any = None):
        """Follow a job to its end; ``on_progress(job)`` sees each state read on the way."""
        return self._run(calls.wait_job(job_id, timeout=timeout, poll=poll, on_progress=on_progress))

    def create_key(self, name: str, *, brains: dict[str, str] | None = None, admin: bool = False):
        """A new API key (admin only): ``brains`` maps brain names to "read" or "write". The
        answer's ``key`` is the secret, shown this once."""
        return self._run(calls.create_key(name, brains=brains, admin=admin))

    def keys(self):
        return self._run(calls.list_keys())

    def revoke_key(self, key_id: int | str):
        return self._run(calls.revoke_key(key_id))

    def ready(self):
        return self._run(calls.ready())


class Brain:
    """One brain of a client. With an AsyncClient every method returns an awaitable."""

    def __init__(self, client: _Api, name: str) -> None:
        self.client, self.name = client, name

    def __repr__(self) -> str:
        return f"Brain({self.name!r})"

    def info(self):
        return self.client._run(calls.get_brain(self.name))

    def update(self, **changes: Any):
        """Change ``params`` and/or ``sleep_policy`` (BrainUpdate)."""
        return self.client._run(calls.update_brain(self.name, **changes))

    def delete(self):
        return self.client._run(calls.delete_brain(self.name))

    def learn(self, inputs: Any, labels: Any, *, task: str, ids: Any = None, wait: bool = False, chunk: int = 512):
        """Teach labelled samples (see ``calls.learn``): ids are generated when not given, so a
        retried request is never learned twice. Returns a ``Learned``."""
        return self.client._run(calls.learn(self.name, inputs, labels, task=task, ids=ids, wait=wait, chunk=chunk))

    def predict(self, inputs: Any, *, task: str | None = None):
        return self.client._run(calls.predict(self.name, inputs, task=task))

    def feedback(self, predictions: Any, labels: Any, *, task: str | None = None):
        """True labels for served predictions (ids from ``predict``'s answer); see ``calls.feedback``."""
        return self.client._run(calls.feedback(self.name, predictions, labels, task=task))

    def evaluate(self, inputs: Any, labels: Any, *, task: str, mode: str = "class"):
        return self.client._run(calls.evaluate(self.name, inputs, labels, task=task, mode=mode))

    def sleep(self, *, wait: bool = False, timeout: float = 600.0, poll: float = 0.25):
        return self.client._run(calls.sleep(self.name, wait=wait, timeout=timeout, poll=poll))

    def tasks(self):
        return self.client._run(calls.tasks(self.name))

    def versions(self):
        return self.client._run(calls.versions(self.name))

    def promote(self, number: int):
        return self.client._run(calls.promote(self.name, number))

    def metrics(self):
        return self.client._run(calls.metrics(self.name))


class Client(_Api):
    """Blocking client on ``httpx.Client``; pass ``http`` to bring your own (e.g. a TestClient)."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", *, api_key: str | None = None,
                 retry: RetryPolicy | None = None, timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
                 http: httpx.Client | None = None) -> None:
        super().__init__(http or httpx.Client(base_url=base_url, timeout=timeout), own_http=http is None,
                         api_key=api_key, retry=retry)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if self._own_http:
            self.http.close()

    def _run(self, steps: Steps[Any]) -> Any:
        answer = None
        try:
            while True:
                step = steps.send(answer)
                if isinstance(step, Pause):
                    time.sleep(step.seconds)
                    answer = None
                else:
                    answer = self._send(step)
        except StopIteration as done:
            return done.value

    def _send(self, call: Call) -> Any:
        delays = self.retry.delays()
        while True:
            response = error = None
            try:
                response = self.http.request(call.method, call.path, json=call.json, params=call.params,
                                             headers=self.headers)
            except httpx.TransportError as exc:
                error = exc
            pause = _pause_after(call, delays, response, error)
            if pause is None:
                return _answer(call, response, error)
            time.sleep(pause)


class AsyncClient(_Api):
    """Non-blocking client on ``httpx.AsyncClient``: ``await client.brains()``, ``await brain.predict(x)``."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", *, api_key: str | None = None,
                 retry: RetryPolicy | None = None, timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
                 http: httpx.AsyncClient | None = None) -> None:
        super().__init__(http or httpx.AsyncClient(base_url=base_url, timeout=timeout), own_http=http is None,
                         api_key=api_key, retry=retry)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own_http:
            await self.http.aclose()

    async def _run(self, steps: Steps[Any]) -> Any:
        answer = None
        try:
            while True:
                step = steps.send(answer)
                if isinstance(step, Pause):
                    await asyncio.sleep(step.seconds)
                    answer = None
                else:
                    answer = await self._send(step)
        except StopIteration as done:
            return done.value

    async def _send(self, call: Call) -> Any:
        delays = self.retry.delays()
        while True:
            response = error = None
            try:
                response = await self.http.request(call.method, call.path, json=call.json, params=call.params,
                                                   headers=self.headers)
            except httpx.TransportError as exc:
                error = exc
            pause = _pause_after(call, delays, response, error)
            if pause is None:
                return _answer(call, response, error)
            await asyncio.sleep(pause)
