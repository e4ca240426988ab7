"""What a client may ask for when it creates a brain: the strategies and their params."""

from __future__ import annotations

from fastapi import APIRouter

from models.registry import DEFAULT_STRATEGY, STRATEGIES, param_schema
from service import schemas
from service.api.deps import Caller

router = APIRouter(prefix="/v1/strategies", tags=["brains"])


@router.get("", response_model=schemas.StrategyList)
def list_strategies(_: Caller) -> schemas.StrategyList:
    """Every strategy a brain can be created with: the continual-learning settings it handles
    (``class``, ``task``, ``domain``), whether it can be meta-trained, whether its wake can be
    sharded over several workers and under which params (``mergeable``, ``mergeable_when``;
    ``BRAIN_WAKE_SHARDS``), and the JSON schema of its ``params`` (types, ranges, defaults)."""
    return schemas.StrategyList(strategies=[
        schemas.StrategyOut(name=name, default=name == DEFAULT_STRATEGY, settings=list(cls.settings),
                            meta_trainable=cls.meta_trainable, mergeable=cls.mergeable_when is not None,
                            mergeable_when=cls.mergeable_when, params=param_schema(name))
        for name, cls in sorted(STRATEGIES.items())
    ])
