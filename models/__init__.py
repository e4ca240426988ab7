"""The learning code of plastic-brain, pure PyTorch.

Importing the package registers every strategy in ``models.registry.STRATEGIES``.
"""

from models import finetune, plastic  # noqa: F401  (registration on import)
from models.learner import Learner, Replay, Stats
from models.registry import (
    DEFAULT_STRATEGY,
    STRATEGIES,
    ParamsError,
    create,
    param_schema,
    validate_params,
)

__all__ = [
    "DEFAULT_STRATEGY",
    "STRATEGIES",
    "Learner",
    "ParamsError",
    "Replay",
    "Stats",
    "create",
    "param_schema",
    "validate_params",
]
