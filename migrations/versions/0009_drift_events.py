"""drift events: when a brain's served predictions drifted, on which signal, by which detector

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 21:15:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'drift_events',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('brain_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('signal', sa.String(length=16), nullable=False),
        sa.Column('detector', sa.String(length=32), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('statistic', sa.JSON(), nullable=False),
        sa.Column('slept', sa.String(length=36), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['brain_id'], ['brains.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('drift_events') as batch:
        batch.create_index(batch.f('ix_drift_events_brain_id'), ['brain_id'], unique=False)


def downgrade() -> None:
    op.drop_table('drift_events')
