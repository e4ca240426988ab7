"""The learning code of plastic-brain, pure PyTorch.

Importing the package registers every strategy in ``models.registry.STRATEGIES``.
"""

from models import (  # noqa: F401  (registration on import)
    agem,
    anml,
    ewc,
    experience_replay,
    finetune,
    gem,
    joint,
    lwf,
    mygo,
    packnet,
    plastic,
    pnn,
)
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
