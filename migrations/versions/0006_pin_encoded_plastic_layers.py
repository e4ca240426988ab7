"""pin the layers of existing plastic brains on an encoder's features

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 18:30:00

The plastic strategy's default layers (``layers: null``) for an encoder's features (text
embeddings, an image encoder's output) changed from one sparse layer to none: the readout reads the
normalised features themselves. A stored brain's checkpoint holds the state of the layers it was
created with, so every existing plastic brain on such an encoder that still has ``layers: null``
(those created after 0005) is pinned to the sparse layer it has. Downgrading keeps the pinned
layers, which the older code accepts and which are what it would build.
"""

import json

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

# The default as it was, written out: a migration must not change when the code does.
OLD_SPARSE = {"type": "sparse", "hidden": 2048, "k": 256, "hebbian_lr": 0.0, "frozen": False,
              "neurogenesis": True}
RAW_ENCODERS = (None, "flatten", "pixels")  # the encoders that hand the learner the raw input

brains = sa.table(
    "brains", sa.column("id", sa.Integer), sa.column("strategy", sa.String),
    sa.column("encoder", sa.String), sa.column("params", sa.JSON),
)


def upgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(sa.select(brains.c.id, brains.c.encoder, brains.c.params)
                        .where(brains.c.strategy == "plastic")).all()
    for brain_id, encoder, params in rows:
        params = json.loads(params) if isinstance(params, str) else dict(params or {})
        if encoder not in RAW_ENCODERS and params.get("layers") is None:
            conn.execute(brains.update().where(brains.c.id == brain_id)
                         .values(params={**params, "layers": [dict(OLD_SPARSE)]}))


def downgrade() -> None:
    pass  # the pinned layers are what the older code builds for ``null``
