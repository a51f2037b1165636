"""when each protected item next has a recovery point due to expire (retention looks only at those)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-13 12:00:00
"""
from alembic import op
import sqlalchemy as sa
import haven.db.types


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('protected_items', schema=None) as batch_op:
        batch_op.add_column(sa.Column('retention_due_at', haven.db.types.UTCDateTime(), nullable=True))
    op.create_index('ix_protected_items_state_retention_due', 'protected_items', ['state', 'retention_due_at'])


def downgrade() -> None:
    op.drop_index('ix_protected_items_state_retention_due', table_name='protected_items')
    with op.batch_alter_table('protected_items', schema=None) as batch_op:
        batch_op.drop_column('retention_due_at')
