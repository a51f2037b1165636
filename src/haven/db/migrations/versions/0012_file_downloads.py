"""file recovery's download audit (file_downloads)

Revision ID: 0012
Revises: 0010
Create Date: 2026-12-12 12:00:00
"""
from alembic import op
import sqlalchemy as sa
import haven.db.types


revision = '0012'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'file_downloads',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('subscription_id', sa.String(length=32), nullable=False),
        sa.Column('vault_id', sa.String(length=32), nullable=False),
        sa.Column('item_id', sa.String(length=32), nullable=False),
        sa.Column('vm', sa.String(length=128), nullable=False),
        sa.Column('point_id', sa.String(length=64), nullable=False),
        sa.Column('disk', sa.String(length=64), nullable=False),
        sa.Column('volume', sa.String(length=200), nullable=False),
        sa.Column('path', sa.Text(), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('range', sa.String(length=100), nullable=True),
        sa.Column('principal_id', sa.String(length=32), nullable=False),
        sa.Column('principal_name', sa.String(length=200), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('bytes', sa.BigInteger(), nullable=False),
        sa.Column('started_at', haven.db.types.UTCDateTime(), nullable=False),
        sa.Column('finished_at', haven.db.types.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_file_downloads_vault_started', 'file_downloads', ['vault_id', 'started_at'])


def downgrade() -> None:
    op.drop_index('ix_file_downloads_vault_started', table_name='file_downloads')
    op.drop_table('file_downloads')
