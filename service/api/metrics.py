"""Continual-learning metrics of a brain, from its recorded evaluations."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query

from service import brains, schemas
from service.api.deps import CanRead, SessionDep

router = APIRouter(prefix="/v1/brains", tags=["metrics"])


@router.get("/{name}/metrics", response_model=schemas.MetricsOut)
def get_metrics(
    name: str,
    s: SessionDep,
    _: CanRead,
    mode: Literal["class", "task"] = Query("class", description="Which evaluations to use."),
) -> schemas.MetricsOut:
    """Accuracy matrix (rows: evaluated versions in order, columns: tasks in arrival order), average
    accuracy, backward and forward transfer and forgetting, with the history behind them."""
    return brains.metrics(s, brains.get_brain(s, name), mode=mode)
