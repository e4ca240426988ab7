"""Continual-learning metrics of a brain, from its recorded evaluations and feedback, and its drift events."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query, Request
from sqlalchemy import select

from service import brains, feedback, schemas
from service.api.deps import CanRead, SessionDep
from service.drift_watch import SIGNALS
from service.tables import DriftRecord

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


@router.get("/{name}/drift", response_model=schemas.DriftOut)
def get_drift(name: str, request: Request, s: SessionDep, _: CanRead,
              limit: int = Query(100, ge=1, le=1000)) -> schemas.DriftOut:
    """Drift events of the brain's served predictions (newest first), and how many samples of each
    signal this API process has watched."""
    brain = brains.get_brain(s, name)
    rows = s.scalars(select(DriftRecord).where(DriftRecord.brain_id == brain.id)
                     .order_by(DriftRecord.id.desc()).limit(limit)).all()
    watch = request.app.state.drift
    return schemas.DriftOut(
        events=[schemas.DriftEventOut(signal=r.signal, detector=r.detector, version=r.version, statistic=r.statistic,
                                      sleep_job=r.slept, created_at=r.created_at) for r in rows],
        watched={signal: watch.fed.get((brain.id, signal), 0) for signal in SIGNALS})
