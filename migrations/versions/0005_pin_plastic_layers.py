"""pin the layers of existing plastic brains: the default front end changed

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 16:00:00

The plastic strategy's default layers (``layers: null``) now give the conv front end to flat
vectors of s * s values too, and a conv layer's default ``activation`` became ``power``. A stored
brain's checkpoint holds the state of the layers it was created with, so every existing plastic
brain is pinned to them: ``layers: null`` becomes the layers the old default gave (the conv front
end with ``relu`` for image shapes of at least 12 x 12 read through the pixels, else one sparse
layer), and a conv layer without ``activation`` gets ``relu``. Downgrading drops ``activation:
relu`` again (the older code knows no such key) and keeps the pinned layers, which it accepts.
"""

import json

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

# The defaults as they were, written out: a migration must not change when the code does.
OLD_CONV = {"type": "conv", "filters": 64, "size": 5, "pool": 4, "activation": "relu"}
OLD_SPARSE = {"type": "sparse", "hidden": 2048, "k": 256, "hebbian_lr": 0.0, "frozen": False,
              "neurogenesis": True}
RAW_ENCODERS = (None, "flatten", "pixels")  # the encoders that hand the learner the input's shape

brains = sa.table(
    "brains", sa.column("id", sa.Integer), sa.column("strategy", sa.String),
    sa.column("encoder", sa.String), sa.column("input_shape", sa.JSON), sa.column("params", sa.JSON),
)


def _old_default(encoder: str | None, shape: list[int]) -> list[dict]:
    image = encoder in RAW_ENCODERS and len(shape) in (2, 3) and min(shape[-2:]) >= 12
    return [dict(OLD_CONV if image else OLD_SPARSE)]


def _rewrite(change) -> None:
    conn = op.get_bind()
    rows = conn.execute(sa.select(brains.c.id, brains.c.encoder, brains.c.input_shape, brains.c.params)
                        .where(brains.c.strategy == "plastic")).all()
    for brain_id, encoder, shape, params in rows:
        params = json.loads(params) if isinstance(params, str) else dict(params or {})
        shape = json.loads(shape) if isinstance(shape, str) else list(shape)
        new = change(params, encoder, shape)
        if new != params:
            conn.execute(brains.update().where(brains.c.id == brain_id).values(params=new))


def upgrade() -> None:
    def pin(params: dict, encoder: str | None, shape: list[int]) -> dict:
        layers = params.get("layers")
        if layers is None:
            layers = _old_default(encoder, shape)
        else:
            layers = [{**layer, "activation": "relu"} if layer.get("type") == "conv" and "activation" not in layer
                      else layer for layer in layers]
        return {**params, "layers": layers}

    _rewrite(pin)


def downgrade() -> None:
    def unpin(params: dict, encoder: str | None, shape: list[int]) -> dict:
        layers = params.get("layers")
        if layers is None:
            return params
        return {**params, "layers": [
            {k: v for k, v in layer.items() if not (k == "activation" and v == "relu")} for layer in layers
        ]}

    _rewrite(unpin)
