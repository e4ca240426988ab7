"""JSON bodies parsed by pydantic in one step, for the routes where parsing dominates.

FastAPI parses a body with the standard library's ``json`` and validates the Python objects it
built; pydantic's own ``model_validate_json`` does both in one step, much faster on a predict body
of many numbers (figures: docs/benchmarks.md, "What the predict path does now"). Routes that take
``Request`` and call :func:`parse` keep FastAPI's error format (422, ``detail`` with ``loc`` under
``body``) and declare their body for the OpenAPI document with :func:`body_schema`;
:func:`parse_off_loop` keeps large bodies off the event loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

M = TypeVar("M", bound=BaseModel)
REF = "#/components/schemas/{model}"
#: Bodies up to this size are parsed on the event loop (well under a millisecond); larger ones in a
#: worker thread, so that one big POST does not stall every other request.
INLINE_BYTES = 64 * 1024


def parse(model: type[M], raw: bytes) -> M:
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(safe_errors(errors), body=raw[:1000]) from None


def json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` (an input a validation error echoes) made writable as JSON: NaN and infinities
    (which Python's and pydantic's JSON parsers accept) as their names, strings with lone
    surrogates (which Python's parser accepts) and bytes that are not UTF-8 (a body pydantic could
    not parse) with those escaped. Without this, the 422 that names them fails to render and the
    client gets a 500."""
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, (bytes, bytearray)):  # a body that is not UTF-8, echoed whole
        return bytes(value).decode("utf-8", "backslashreplace")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value
    if depth > 32 and isinstance(value, (dict, list, tuple)):
        return "..."
    if isinstance(value, dict):
        return {json_safe(k, depth + 1): json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, depth + 1) for v in value]
    return value


def safe_errors(errors: Any) -> list[dict[str, Any]]:
    """Validation errors whose echoed ``input`` is :func:`json_safe`."""
    return [{**e, "input": json_safe(e["input"])} if "input" in e else e for e in errors]


class SafeErrorsRoute(APIRoute):
    """An ``APIRoute`` whose 422 for a body FastAPI parsed itself is always writable as JSON
    (:func:`safe_errors`): ``{"sleep_policy": {"every_seconds": NaN}}`` gave a 500."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def safe(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                raise RequestValidationError(safe_errors(exc.errors()), body=exc.body) from None

        return safe


async def parse_off_loop(model: type[M], raw: bytes) -> M:
    """:func:`parse`, in a worker thread when ``raw`` is large."""
    if len(raw) <= INLINE_BYTES:
        return parse(model, raw)
    return await run_in_threadpool(parse, model, raw)


#: the models declared by :func:`body_schema`, for :func:`add_schemas` to put into the document
BODIES: list[type[BaseModel]] = []


def body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` declaring ``model`` as the route's required JSON body."""
    if model not in BODIES:
        BODIES.append(model)
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": REF.format(model=model.__name__)}}}}}


def add_schemas(openapi: dict[str, Any]) -> dict[str, Any]:
    """Put the models of the routes' bodies (:data:`BODIES`, and the models they use) into the
    document's components."""
    components = openapi.setdefault("components", {}).setdefault("schemas", {})
    for model in BODIES:
        schema = model.model_json_schema(ref_template=REF)
        for name, definition in schema.pop("$defs", {}).items():
            components.setdefault(name, definition)
        components.setdefault(model.__name__, schema)
    return openapi
