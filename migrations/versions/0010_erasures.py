"""exact unlearning: samples.source, brains.retrain_from, the erasures audit table

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 21:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    with op.batch_alter_table('samples') as batch:
        batch.add_column(sa.Column('source', sa.String(length=128), nullable=True))
    with op.batch_alter_table('brains') as batch:
        batch.add_column(sa.Column('retrain_from', sa.BigInteger(), nullable=True))
    op.create_table(
        'erasures',
        sa.Column('id', BIG_ID, nullable=False),
        sa.Column('brain_id', BIG_ID, nullable=False),
        sa.Column('brain', sa.String(length=64), nullable=False),
        sa.Column('key_id', sa.BigInteger(), nullable=True),
        sa.Column('key_name', sa.String(length=128), nullable=True),
        sa.Column('selector', sa.JSON(), nullable=False),
        sa.Column('job', sa.String(length=36), nullable=False),
        sa.Column('rows', sa.BigInteger(), nullable=True),
        sa.Column('how', sa.String(length=32), nullable=True),
        sa.Column('versions_deleted', sa.JSON(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['brain_id'], ['brains.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('erasures') as batch:
        batch.create_index(batch.f('ix_erasures_brain_id'), ['brain_id'], unique=False)


def downgrade() -> None:
    op.drop_table('erasures')
    # ALTER TABLE ... DROP COLUMN in place (SQLite 3.35+ has it too): a batch's copy of ``brains``
    # would drop the old table, and with foreign keys on, that cascades to every sample in the log
    op.drop_column('brains', 'retrain_from')
    op.drop_column('samples', 'source')
