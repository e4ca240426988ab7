"""The registry of learning strategies and the validation of their hyperparameters.

A strategy's hyperparameters are exactly its constructor's keyword-only arguments after
``input_dim``, ``num_classes`` and ``seed`` (which the service passes itself). Each is annotated
with its type and, where it has a range, a pydantic ``Field`` constraint, e.g.
``k: Annotated[int, Field(ge=1)] = 32``. From those annotations this module builds a pydantic model
per strategy (strict types, unknown names forbidden) that both validates client input and publishes
a JSON schema.
"""

from __future__ import annotations

import inspect
import math
import typing
from collections.abc import Sequence
from functools import cache
from typing import Any, TypeVar

import pydantic
from pydantic import ConfigDict, create_model

from models.learner import Learner

STRATEGIES: dict[str, type[Learner]] = {}
DEFAULT_STRATEGY = "plastic"

# Constructor arguments the service supplies; they are not hyperparameters.
_SERVICE_ARGS = frozenset({"self", "input_dim", "num_classes", "seed", "input_shape", "encoded"})

L = TypeVar("L", bound=type[Learner])


class ParamsError(ValueError):
    """A strategy name or its hyperparameters are invalid; the message is meant for a human."""


def register(cls: L) -> L:
    """Class decorator: make ``cls`` available under ``cls.name``.

    Its hyperparameter model is built at once, so a constructor that breaks the conventions
    (keyword-only, annotated, with a default) fails on import, not on a client's request.
    """
    name = cls.name
    if name in STRATEGIES and STRATEGIES[name] is not cls:
        raise ValueError(f"strategy {name!r} is already registered by {STRATEGIES[name].__name__}")
    _params_model(cls)
    STRATEGIES[name] = cls
    return cls


def _strategy(name: str) -> type[Learner]:
    try:
        return STRATEGIES[name]
    except KeyError:
        known = ", ".join(sorted(STRATEGIES))
        raise ParamsError(f"unknown strategy {name!r} (known: {known})") from None


@cache
def _params_model(cls: type[Learner]) -> type[pydantic.BaseModel]:
    """A pydantic model whose fields are the keyword-only hyperparameters of ``cls``."""
    hints = typing.get_type_hints(cls.__init__, include_extras=True)
    fields: dict[str, Any] = {}
    for param in inspect.signature(cls.__init__).parameters.values():
        if param.name in _SERVICE_ARGS:
            continue
        if param.kind is not inspect.Parameter.KEYWORD_ONLY:
            raise TypeError(f"{cls.__name__}: hyperparameter {param.name!r} must be keyword-only")
        if param.default is inspect.Parameter.empty or param.name not in hints:
            raise TypeError(f"{cls.__name__}: {param.name!r} needs a type and a default")
        fields[param.name] = (hints[param.name], param.default)
    config = ConfigDict(extra="forbid", strict=True, title=f"{cls.name} params")
    return create_model(f"{cls.__name__}Params", __config__=config, **fields)


def _describe(error: dict, allowed: list[str]) -> str:
    where = ".".join(str(part) for part in error["loc"]) or "params"
    if error["type"] == "extra_forbidden":
        return f"unknown parameter {where!r} (allowed: {', '.join(allowed)})"
    return f"parameter {where!r}: {error['msg']} (got {error.get('input')!r})"


def param_schema(name: str) -> dict:
    """JSON schema of strategy ``name``'s hyperparameters (types, ranges, defaults)."""
    return _params_model(_strategy(name)).model_json_schema()


def validate_params(name: str, params: dict | None = None) -> dict:
    """Check ``params`` for strategy ``name``; return them complete, with defaults filled in.

    Raises ``ParamsError`` naming every offending parameter: unknown names, wrong types (strict:
    no strings for numbers, no booleans for integers) and values out of range, and then any
    constraint between parameters that the strategy checks in ``check_params``.
    """
    cls = _strategy(name)
    if params is not None and not isinstance(params, dict):
        raise ParamsError(f"params must be an object, got {type(params).__name__}")
    model = _params_model(cls)
    try:
        values = model.model_validate(params or {}).model_dump()
    except pydantic.ValidationError as exc:
        allowed = list(model.model_fields)
        problems = "; ".join(_describe(e, allowed) for e in exc.errors())
        raise ParamsError(f"invalid params for strategy {name!r}: {problems}") from None
    try:
        cls.check_params(values)
    except ValueError as exc:
        raise ParamsError(f"invalid params for strategy {name!r}: {exc}") from None
    return values


def create(
    name: str,
    *,
    input_dim: int,
    num_classes: int,
    seed: int = 0,
    params: dict | None = None,
    input_shape: Sequence[int] | None = None,
    encoded: bool = False,
) -> Learner:
    """Build a fresh learner of strategy ``name`` after validating its ``params``.

    ``input_shape`` (default ``[input_dim]``) and ``encoded`` (the inputs are a pretrained
    encoder's output, not raw values) reach the strategies whose constructor takes them (e.g.
    plastic's default layers depend on both). A constructor's ``ValueError`` (a params combination
    that does not fit this input) becomes a ``ParamsError``.
    """
    if input_dim < 1 or num_classes < 1:
        raise ParamsError(
            f"input_dim and num_classes must be positive, got {input_dim} and {num_classes}"
        )
    shape = [int(d) for d in input_shape] if input_shape is not None else [input_dim]
    if math.prod(shape) != input_dim:
        raise ParamsError(f"input_shape {shape} does not hold {input_dim} values")
    values = validate_params(name, params)
    cls = STRATEGIES[name]
    takes = inspect.signature(cls.__init__).parameters
    extra = {arg: value for arg, value in (("input_shape", shape), ("encoded", encoded)) if arg in takes}
    try:
        return cls(input_dim=input_dim, num_classes=num_classes, seed=seed, **extra, **values)
    except ValueError as exc:
        raise ParamsError(f"invalid params for strategy {name!r}: {exc}") from None
