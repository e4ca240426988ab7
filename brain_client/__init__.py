"""A Python client for plastic-brain, sync and async, on httpx.

    from brain_client import Client
    client = Client("http://127.0.0.1:8000")
    brain = client.brain("digits")
    brain.learn(x, y, task="t1", wait=True)   # ids generated: a retried request is learned once
    brain.predict(x[:3]).predictions

Answers are the client's own pydantic models (``brain_client.wire``). A 503 (and 502/504/429) or a
dropped connection is retried with backoff (``RetryPolicy``); errors raise ``BrainAPIError``
subclasses carrying the service's reason.
"""

from brain_client.calls import Learned, encode_inputs
from brain_client.client import AsyncClient, Brain, Client
from brain_client.errors import (
    BrainAPIError,
    Conflict,
    Forbidden,
    Invalid,
    JobFailed,
    NotFound,
    TooLarge,
    Unauthorized,
    Unavailable,
)
from brain_client.retry import NO_RETRY, RetryPolicy

__all__ = [
    "NO_RETRY",
    "AsyncClient",
    "Brain",
    "BrainAPIError",
    "Client",
    "Conflict",
    "Forbidden",
    "Invalid",
    "JobFailed",
    "Learned",
    "NotFound",
    "RetryPolicy",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
    "encode_inputs",
]
