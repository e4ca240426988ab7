"""Continual-learning metrics of a brain, from its recorded evaluations and feedback."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query

from service import brains, feedback, schemas
from service.api.deps import CanRead, SessionDep

router = APIRouter(prefix="/v1/brains", tags=["metrics"])


@router.get("/{name}/metrics", response_model=schemas.MetricsOut)
def get_metrics(
    name: str,
    s: SessionDep,
    _: CanRead,
    mode: Literal["class", "task"] = Query("class", description="Which evaluations to use."),
    bucket_seconds: int = Query(3600, ge=1, le=86_400 * 31,
                                description="Width of the prequential accuracy's time buckets."),
) -> schemas.MetricsOut:
    """Accuracy matrix (rows: evaluated versions in order, columns: tasks in arrival order), average
    accuracy, backward and forward transfer and forgetting, with the history behind them; and the
    prequential accuracy of served predictions later labelled by feedback."""
    brain = brains.get_brain(s, name)
    out = brains.metrics(s, brain, mode=mode)
    out.prequential = feedback.prequential(s, brain, bucket_seconds=bucket_seconds)
    return out
