"""api keys: hashed API keys and the brains each may read or change

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 00:33:47.329966
"""

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('api_keys',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('admin', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key_hash')
    )
    op.create_table('api_key_grants',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('key_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('brain_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('access', sa.String(length=8), nullable=False),
    sa.ForeignKeyConstraint(['brain_id'], ['brains.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['key_id'], ['api_keys.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key_id', 'brain_id')
    )
    op.create_index(op.f('ix_api_key_grants_brain_id'), 'api_key_grants', ['brain_id'], unique=False)
    op.create_index(op.f('ix_api_key_grants_key_id'), 'api_key_grants', ['key_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_api_key_grants_key_id'), table_name='api_key_grants')
    op.drop_index(op.f('ix_api_key_grants_brain_id'), table_name='api_key_grants')
    op.drop_table('api_key_grants')
    op.drop_table('api_keys')
