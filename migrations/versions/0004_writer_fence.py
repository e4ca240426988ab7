"""fenced writers: the brain's writer fencing token and the running job's heartbeat

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 12:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('brains') as batch:
        batch.add_column(sa.Column('writer_fence', sa.BigInteger(), nullable=False, server_default='0'))
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('heartbeat_at')
    with op.batch_alter_table('brains') as batch:
        batch.drop_column('writer_fence')
