"""blobs: checkpoints and meta-training sets in the database, so no process needs a shared disk

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 20:20:00

A blob's bytes are cut into chunks, one row each (``service.blobs.DatabaseBlobs``). On Postgres the
chunks are stored out of line without compression (``STORAGE EXTERNAL``): tensors barely compress,
and trying costs time on every write. Existing version folders are copied in by ``brain migrate``
(and ``brain serve``), not here: a migration does not know the data dir (``service.versions.import_folders``).
"""

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'blobs',
        sa.Column('key', sa.String(length=512), nullable=False),
        sa.Column('chunk', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('data', sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint('key', 'chunk'),
    )
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('ALTER TABLE blobs ALTER COLUMN data SET STORAGE EXTERNAL')


def downgrade() -> None:
    op.drop_table('blobs')
