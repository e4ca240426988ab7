"""Strategy registry: registration on import, parameter schemas and validation."""

from __future__ import annotations

import pytest

import models
from models import (
    DEFAULT_STRATEGY,
    STRATEGIES,
    ParamsError,
    create,
    param_schema,
    validate_params,
)
from models.finetune import Finetune
from models.learner import Learner
from models.plastic import Plastic
from models.registry import register


def test_strategies_register_on_import():
    assert STRATEGIES["plastic"] is Plastic
    assert STRATEGIES["finetune"] is Finetune
    assert DEFAULT_STRATEGY in STRATEGIES
    assert models.STRATEGIES is STRATEGIES


def test_a_name_cannot_be_taken_twice():
    class Impostor(Learner):
        name = "plastic"

    with pytest.raises(ValueError, match="already registered"):
        register(Impostor)
    assert STRATEGIES["plastic"] is Plastic


def test_defaults_are_filled_in_and_values_normalised():
    params = validate_params("finetune", {"lr": 1})
    assert params == {"hidden": 400, "lr": 1.0, "epochs_per_batch": 1}
    assert isinstance(params["lr"], float)
    assert validate_params("plastic", None) == validate_params("plastic", {})


def test_schema_lists_every_hyperparameter_with_its_bounds():
    schema = param_schema("plastic")
    assert schema["additionalProperties"] is False
    assert schema["properties"]["ridge"] == {
        "default": "auto", "title": "Ridge",
        "description": "L2 penalty of the closed-form core readout; auto: chosen at each sleep by "
                       "exact leave-one-out on the replayed samples",
        "oneOf": [{"exclusiveMinimum": 0, "type": "number"}, {"const": "auto", "type": "string"}],
    }
    layer = schema["$defs"]["LayerSpec"]
    assert layer["additionalProperties"] is False
    assert layer["properties"]["k"] == {
        "default": 256, "description": "active units per sample (k-winner-take-all)",
        "minimum": 1, "title": "K", "type": "integer",
    }
    assert set(schema["properties"]) == set(validate_params("plastic"))
    assert "seed" not in schema["properties"] and "input_dim" not in schema["properties"]


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("nope", {}, "unknown strategy 'nope' (known: "),
        ("plastic", {"colour": 1}, "unknown parameter 'colour'"),
        ("plastic", {"layers": [{"k": "3"}]}, "parameter 'layers.0.sparse.k': Input should be a valid integer"),
        ("plastic", {"layers": [{"k": True}]}, "parameter 'layers.0.sparse.k': Input should be a valid integer"),
        ("plastic", {"layers": [{"k": 2.5}]}, "parameter 'layers.0.sparse.k': Input should be a valid integer"),
        ("plastic", {"layers": [{"k": 0}]}, "parameter 'layers.0.sparse.k': Input should be greater than or equal to 1"),
        ("plastic", {"memory_weight": 1.5}, "parameter 'memory_weight': Input should be less than"),
        ("plastic", {"layers": [{"k": 4, "hidden": 8}, {"k": 64, "hidden": 64}]},
         "layers[1]: k (64) must be smaller than hidden (64)"),
        ("plastic", {"layers": [{"hidden": 8, "k": 2}] * 9}, "parameter 'layers': List should have at most 8 items"),
        ("plastic", {"layers": [{"hidden": 8, "k": 2, "depth": 3}]}, "unknown parameter 'layers.0.sparse.depth'"),
        ("plastic", {"mode": "calm"}, "parameter 'mode': Input should be 'plastic' or 'panic'"),
        ("finetune", {"lr": 0}, "parameter 'lr': Input should be greater than 0"),
        ("finetune", [1], "params must be an object"),
    ],
)
def test_bad_params_are_explained(name, params, message):
    with pytest.raises(ParamsError) as error:
        validate_params(name, params)
    assert message in str(error.value)


def test_every_problem_is_reported_at_once():
    with pytest.raises(ParamsError) as error:
        validate_params("plastic", {"layers": [{"k": 0}], "ridge": -1, "colour": 1})
    text = str(error.value)
    assert "'layers.0.sparse.k'" in text and "'ridge.number'" in text and "'colour'" in text


def test_create_builds_a_configured_learner():
    learner = create("plastic", input_dim=5, num_classes=3, seed=4, params={"layers": [{"hidden": 32, "k": 4}]})
    assert isinstance(learner, Plastic)
    assert (learner.input_dim, learner.num_classes, learner.seed) == (5, 3, 4)
    assert learner.layers[0].w_enc.shape == (32, 5) and learner.layers[0].k == 4


def test_create_validates():
    with pytest.raises(ParamsError):
        create("finetune", input_dim=5, num_classes=3, params={"hidden": -1})
    with pytest.raises(ParamsError):
        create("finetune", input_dim=0, num_classes=3)


def test_a_constructor_that_breaks_the_conventions_is_refused():
    class Untyped(Learner):
        name = "untyped-test"

        def __init__(self, *, input_dim: int, num_classes: int, seed: int = 0, lr=0.1) -> None:
            super().__init__(input_dim=input_dim, num_classes=num_classes, seed=seed)

    with pytest.raises(TypeError, match="'lr' needs a type and a default"):
        register(Untyped)
    assert "untyped-test" not in STRATEGIES


def test_an_unknown_strategy_error_lists_the_known_ones():
    with pytest.raises(ParamsError) as error:
        validate_params("nope")
    assert all(name in str(error.value) for name in STRATEGIES)
