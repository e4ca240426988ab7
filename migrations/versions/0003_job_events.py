"""job events: what happened to each job, in order (queued, received, started, retried, ended)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 01:05:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('events', sa.JSON(), nullable=True))  # older jobs: none recorded


def downgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('events')
