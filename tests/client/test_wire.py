"""The client's wire models and request bodies against the service's OpenAPI document, so that the
client (which imports nothing of the service) cannot drift from it.

- Responses: every model of ``brain_client.wire`` is named after a response schema of some route,
  and every field it declares exists there with a type that accepts every value the service may
  send (the check recurses into nested models, lists and maps).
- Requests: the body of every call that sends one, built by ``brain_client.calls`` without I/O,
  conforms to the request schema of its route (no field the service does not know, every value of
  an allowed type), and the service's own request model accepts it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel

from brain_client import calls, wire
from service import schemas
from service.app import create_app
from tests.conftest import make_settings

REF = "#/components/schemas/"
Schema = dict[str, Any]


@pytest.fixture(scope="module")
def openapi(tmp_path_factory: pytest.TempPathFactory) -> Schema:
    return create_app(make_settings(tmp_path_factory.mktemp("var"))).openapi()


class Doc:
    """A JSON schema with the definitions its ``$ref``s point into."""

    def __init__(self, defs: dict[str, Schema]) -> None:
        self.defs = defs

    def resolve(self, schema: Schema) -> Schema:
        while "$ref" in schema:
            schema = self.defs[schema["$ref"].rsplit("/", 1)[-1]]
        return schema


def _types(schema: Schema) -> set[str]:
    if "type" in schema:
        return set(schema["type"]) if isinstance(schema["type"], list) else {schema["type"]}
    values = schema.get("enum", [schema["const"]] if "const" in schema else [])
    return {{str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}[type(v)] for v in values}


def _free_form(schema: Schema) -> bool:
    return schema.get("type") == "object" and "properties" not in schema and schema.get("additionalProperties") is True


def accepts(client: Schema, cdoc: Doc, server: Schema, sdoc: Doc, where: str) -> list[str]:
    """Why the client's schema would refuse some value the server's allows (empty: it accepts all)."""
    client, server = cdoc.resolve(client), sdoc.resolve(server)
    if not client or _free_form(client) and server.get("type") == "object":
        return []  # Any, or a free-form object (dict[str, Any]) where the server sends an object
    if "anyOf" in server:
        return [p for branch in server["anyOf"] for p in accepts(client, cdoc, branch, sdoc, where)]
    if "anyOf" in client:
        tries = [accepts(branch, cdoc, server, sdoc, where) for branch in client["anyOf"]]
        return [] if any(not t for t in tries) else [f"{where}: no branch of the client's type takes {server}"]
    ctypes, stypes = _types(client), _types(server)
    if "number" in ctypes:
        ctypes.add("integer")
    if not stypes <= ctypes:
        return [f"{where}: the client takes {sorted(ctypes)}, the service sends {sorted(stypes)}"]
    if "enum" in client or "const" in client:
        return [f"{where}: the client restricts the values the service sends"]
    problems = []
    if "array" in stypes:
        problems += accepts(client.get("items", {}), cdoc, server.get("items", {}), sdoc, f"{where}[]")
    if "object" in stypes:
        cprops, sprops = client.get("properties", {}), server.get("properties", {})
        for name, prop in cprops.items():
            if name not in sprops:
                problems.append(f"{where}.{name}: the service's schema has no such field")
            else:
                problems += accepts(prop, cdoc, sprops[name], sdoc, f"{where}.{name}")
        if isinstance(server.get("additionalProperties"), dict):
            problems += accepts(client.get("additionalProperties", {}), cdoc, server["additionalProperties"], sdoc,
                                f"{where}{{}}")
    return problems


def conforms(value: Any, schema: Schema, doc: Doc, where: str) -> list[str]:
    """Why ``value`` (JSON) is not one of ``schema``'s (the subset of JSON Schema that FastAPI writes)."""
    schema = doc.resolve(schema)
    if "anyOf" in schema:
        tries = [conforms(value, branch, doc, where) for branch in schema["anyOf"]]
        return [] if any(not t for t in tries) else [p for t in tries for p in t]
    kind = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(type(value))
    kind = kind or ("integer" if isinstance(value, int) else "number")
    allowed = _types(schema)
    if allowed and kind not in allowed and not (kind == "integer" and "number" in allowed):
        return [f"{where}: {kind} where the service takes {sorted(allowed)}"]
    if "enum" in schema and value not in schema["enum"] or "const" in schema and value != schema["const"]:
        return [f"{where}: {value!r} is not one of the service's values"]
    problems = []
    if kind == "array":
        for i, item in enumerate(value):
            problems += conforms(item, schema.get("items", {}), doc, f"{where}[{i}]")
    if kind == "object":
        props = schema.get("properties", {})
        problems += [f"{where}: lacks {name!r}" for name in schema.get("required", []) if name not in value]
        for name, item in value.items():
            if name in props:
                problems += conforms(item, props[name], doc, f"{where}.{name}")
            elif schema.get("additionalProperties") is False:
                problems.append(f"{where}.{name}: the service's schema has no such field")
            elif isinstance(schema.get("additionalProperties"), dict):
                problems += conforms(item, schema["additionalProperties"], doc, f"{where}.{name}")
    return problems


# -- responses -------------------------------------------------------------------------------------
WIRE_MODELS = [cls for cls in vars(wire).values()
               if isinstance(cls, type) and issubclass(cls, BaseModel) and cls.__module__ == wire.__name__
               and not cls.__name__.startswith("_")]


def _response_schemas(openapi: Schema) -> set[str]:
    """Names of the schemas some route answers with, and of those they contain."""
    defs, names, todo = openapi["components"]["schemas"], set(), []
    for ops in openapi["paths"].values():
        for op in ops.values():
            for code, answer in op.get("responses", {}).items():
                ref = answer.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref")
                if code.startswith("2") and ref:
                    todo.append(ref)
    while todo:
        name = todo.pop().rsplit("/", 1)[-1]
        if name not in names:
            names.add(name)
            todo += re.findall(r"'\$ref': '([^']+)'", str(defs[name]))
    return names


@pytest.mark.parametrize("model", WIRE_MODELS, ids=lambda m: m.__name__)
def test_a_wire_model_reads_only_what_the_service_sends(openapi: Schema, model: type[BaseModel]) -> None:
    assert model.__name__ in _response_schemas(openapi), f"no route answers with a {model.__name__}"
    client = model.model_json_schema(ref_template=REF + "{model}")
    server = {"$ref": REF + model.__name__}
    problems = accepts(client, Doc(client.get("$defs", {})), server, Doc(openapi["components"]["schemas"]),
                       model.__name__)
    assert problems == []


def test_every_route_the_client_reads_has_a_wire_model(openapi: Schema) -> None:
    read = {"BrainList", "BrainOut", "TaskList", "VersionList", "VersionOut", "MetricsOut", "SamplesAccepted",
            "PredictOut", "FeedbackAccepted", "EvaluateOut", "JobAccepted", "JobOut", "KeyCreated", "KeyList"}
    assert read <= {m.__name__ for m in WIRE_MODELS} and read <= _response_schemas(openapi)


def test_the_drift_check_sees_a_missing_field_and_a_narrower_type(openapi: Schema) -> None:
    class EvaluateOut(wire.EvaluateOut):
        accuracy: int  # the service sends a number
        speed: float  # the service sends no such field

    client = EvaluateOut.model_json_schema(ref_template=REF + "{model}")
    problems = accepts(client, Doc({}), {"$ref": REF + "EvaluateOut"}, Doc(openapi["components"]["schemas"]), "E")
    assert problems == ["E.accuracy: the client takes ['integer'], the service sends ['number']",
                        "E.speed: the service's schema has no such field"]


# -- requests --------------------------------------------------------------------------------------
X = np.arange(12, dtype=np.float32).reshape(3, 4)
SENDING: dict[str, Callable[[], calls.Steps[Any]]] = {
    "create_brain": lambda: calls.create_brain("b", kind="vector", shape=np.array([4]), strategy="plastic",
                                               params={"hidden": 8}, max_labels=5, seed=1,
                                               sleep_policy={"every_samples": 100}, replay={"size": 10}),
    "update_brain": lambda: calls.update_brain("b", params={"hidden": 8}, sleep_policy={"every_seconds": 60}),
    "learn": lambda: calls.learn("b", X, np.array([0, 1, 2]), task="t1", ids=["a", "b", "c"]),
    "learn rows": lambda: calls.learn("b", [[1, 2], "text", b"\x89PNG"], ["x", "y", "z"], task="t1"),
    "predict": lambda: calls.predict("b", X, task="t1"),
    "evaluate": lambda: calls.evaluate("b", X, ["a", "b", "a"], task="t1", mode="task"),
    "feedback": lambda: calls.feedback("b", ["1a2b3c4d5e6f0011223344-0"], [np.int64(3)], task="t1"),
    "create_key": lambda: calls.create_key("ci", brains={"b": "write"}, admin=False),
}


def _route(openapi: Schema, method: str, path: str) -> Schema:
    for template, ops in openapi["paths"].items():
        if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), path) and method.lower() in ops:
            return ops[method.lower()]
    raise AssertionError(f"the service has no route {method} {path}")


@pytest.mark.parametrize("name", SENDING)
def test_what_the_client_sends_is_what_the_service_takes(openapi: Schema, name: str) -> None:
    call = next(SENDING[name]())
    body_schema = _route(openapi, call.method, call.path)["requestBody"]["content"]["application/json"]["schema"]
    assert conforms(call.json, body_schema, Doc(openapi["components"]["schemas"]), "body") == []
    getattr(schemas, body_schema["$ref"].rsplit("/", 1)[-1]).model_validate(call.json)


def test_the_request_check_sees_an_unknown_field_and_a_wrong_type(openapi: Schema) -> None:
    body = {"task": "t1", "samples": [{"x": [1.0], "label": 1.5, "weight": 2}]}
    problems = conforms(body, {"$ref": REF + "SamplesIn"}, Doc(openapi["components"]["schemas"]), "body")
    assert "body.samples[0].weight: the service's schema has no such field" in problems
    assert any(p.startswith("body.samples[0].label: number where the service takes") for p in problems)
