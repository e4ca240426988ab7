"""Changing a brain after creation: its strategy's params (the learner is reconfigured and keeps
what it learned, published as a new version) and its sleep policy."""

from __future__ import annotations

from models.learner import Unsupported
from models.registry import ParamsError, validate_params
from service import budgets, schemas
from service.brains import get_brain
from service.errors import Invalid, NotFound
from service.locks import Lease
from service.runtime import Runtime
from service.tables import Brain
from service.writer import locked_brain, writer


def update_brain(rt: Runtime, *, name: str, body: schemas.BrainUpdate) -> None:
    """Apply ``body`` as the brain's fenced writer, so no job writes meanwhile; when a job holds
    the brain for longer than ``busy_wait_seconds``, 503 with Retry-After (``BrainLockTimeout``)."""
    if body.sleep_policy is not None:
        budgets.check_sleep_policy(rt.settings, body.sleep_policy)
    with rt.db.session() as s:
        brain_id = get_brain(s, name).id
    with writer(rt, brain_id, wait=rt.settings.busy_wait_seconds) as lease, rt.db.session() as s:
        brain = locked_brain(s, lease)
        if brain is None:
            raise NotFound(f"brain {name!r} not found")
        if body.params is not None:
            _reconfigure(rt, s, brain, lease, body.params)
        if body.sleep_policy is not None:
            brain.sleep_policy = body.sleep_policy.model_dump(exclude_none=True)


def _reconfigure(rt: Runtime, s, brain: Brain, lease: Lease, changes: dict) -> None:
    try:
        params = validate_params(brain.strategy, {**brain.params, **changes})
    except ParamsError as exc:
        raise Invalid(f"params: {exc}") from None
    if params == brain.params:
        return
    budgets.check_model(rt.settings, brain, params=params, tasks=budgets.tasks_of(s, brain))
    learner = rt.versions.load(brain, brain.current_version, device=rt.device)
    try:
        learner = learner.reconfigure(params)
    except Unsupported as exc:
        raise Invalid(f"params: {exc}; create a new brain instead") from None
    except (ValueError, ParamsError) as exc:  # the new params do not fit what the brain holds
        raise Invalid(f"params: {exc}") from None
    changed = sorted(k for k in params if params[k] != brain.params.get(k))
    brain.params = params
    rt.versions.publish_over_current(s, brain, learner, kind="reconfigure", lease=lease, base=brain.current_version,
                                     stats={"changed": changed})
